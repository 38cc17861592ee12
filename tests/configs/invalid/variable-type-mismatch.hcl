project = "bad"

variable "port" {
  type    = number
  default = 8080
}

variable "regions" {
  type    = list(string)
  default = ["eu", ["nested"]]
}

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["./serve", "${var.port}"]
    }
  }
}
