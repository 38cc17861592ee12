project = "bad"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["./run"]
    }
  }
}
