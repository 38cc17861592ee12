# Workspace and label scopes choose a stage's plugin; workspace.name and the app's
# labels are variables too. Run with --workspace production.
project = "scoped"

labels = { team = "web" }

variable "tag" {
  type = string
  default = {
    default    = "dev"
    production = "stable"
  }[workspace.name]
}

app "api" {
  labels = {
    tier = "backend"
    env  = workspace.name
  }

  config {
    env = { LOG_LEVEL = "debug" }
    workspace "production" {
      env = { LOG_LEVEL = "warn" }
    }
    label "tier == backend" {
      env = { BACKEND = "yes" }
    }
  }

  build {
    use "files" {}
    workspace "production" {
      use "command" {
        command = ["make", "release", var.tag]
        output  = "dist"
      }
    }
  }

  deploy {
    use "null" {}
    label "waypoint/workspace == production && tier == backend" {
      use "exec" {
        command = ["./ship.sh", var.tag]
        env     = { LABELS = jsonencode(labels) }
      }
    }
  }
}
