project = "bad"

variable "image" {
  type        = string
  description = "The image to run"
}

variable "password" {
  type      = string
  sensitive = true
}

app "web" {
  build {
    use "docker-pull" {
      image = var.image
      tag   = "1"
      auth {
        username = "me"
        password = var.password
      }
    }
  }
  deploy {
    use "docker" {}
  }
}
