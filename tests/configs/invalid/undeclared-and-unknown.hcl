project = "bad"

variable "tag" {
  type = strng
}

variable "tag" {
  type = string
}

frobnicate {}

app "web" {
  build {
    use "files" {
      path = var.dir
    }
  }
  deploy {
    use "process" {
      command = ["./run", var.tag]
    }
  }
}
