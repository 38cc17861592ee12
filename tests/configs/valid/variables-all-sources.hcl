# Every source of a variable's value, lowest precedence first: default, the variable's
# own env list, *.auto.cairnvars, CAIRN_VAR_, -var-file, -var.
project = "vars"

variable "greeting" {
  type    = string
  default = "hello"
}

variable "from_env_list" {
  type    = string
  default = "unused"
  env     = ["GREETING_FROM_LIST"]
}

variable "replicas" {
  type    = number
  default = 1
}

variable "ports" {
  type    = list(number)
  default = [80]
}

variable "owner" {
  type = object({
    name  = string
    email = string
  })
}

variable "token" {
  type      = string
  sensitive = true
}

app "web" {
  labels = { owner = var.owner.name }
  build {
    use "files" {}
  }
  deploy {
    use "exec" {
      command = ["./deploy.sh", var.greeting, var.from_env_list, tostring(var.replicas)]
      env     = { TOKEN = var.token, PORTS = jsonencode(var.ports) }
    }
  }
}
