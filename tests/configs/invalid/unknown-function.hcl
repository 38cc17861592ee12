project = "bad"

app "web" {
  build {
    use "files" {
      path = shout("src")
    }
  }
  deploy {
    use "process" {
      command = ["./run"]
      count   = length([1, 2]) + nope
    }
  }
}
