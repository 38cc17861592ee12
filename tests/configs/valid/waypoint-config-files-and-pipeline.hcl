# Waypoint's forms: config { internal, file }, templatefile returning a path,
# dynamic() from the environment and from a file, a pipeline with a nested one,
# artifact.* deferred to the deploy, and a plugin block.
project = "legacy"

plugin "null" {
  type {
    build = true
  }
}

pipeline "release-train" {
  step "test" {
    image_url = "example.com/test"
    use "exec" {
      command = "make"
      args    = ["test"]
    }
  }
  step "nested" {
    workspace = "staging"
    pipeline "ship" {
      step "build" {
        use "build" {}
      }
      step "deploy" {
        use "deploy" {}
      }
    }
  }
}

app "legacy" {
  config {
    internal = {
      user = dynamic("env", { name = "DB_USER" })
      pass = dynamic("file", { path = "db-password.txt" })
    }
    env = {
      DATABASE_URL = "postgres://${config.internal.user}:${config.internal.pass}@db/legacy"
    }
    file = {
      "settings.yml" = templatestring("user: $${user}\n", { user = config.internal.user })
    }
  }

  build {
    use "null" {}
  }

  deploy {
    use "exec" {
      command = ["kubectl", "apply", "-f", "<TPL>", "--record=${artifact.tag}"]
      template {
        path = templatefile("${path.app}/job.yaml.tpl", { app = app.name })
      }
    }
  }
}
