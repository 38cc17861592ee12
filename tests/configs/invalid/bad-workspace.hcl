project = "bad"

app "web" {
  build {
    use "files" {}
    workspace "prod" {
      use "files" {
        path = workspace.nmae
      }
    }
  }
  deploy {
    use "process" {
      command = ["./run"]
    }
    label "tier = backend" {
      use "null" {}
    }
  }
}
