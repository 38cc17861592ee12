# Cairn's hello example: a python3 HTTP app, packaged as a directory
# tarball and run as two supervised processes on this machine.
project = "hello"

app "web" {
  config {
    env = {
      GREETING = "Hello from Cairn"
    }
  }

  build {
    use "files" {
      path    = "."
      exclude = ["cairn.hcl"]
    }

    registry {
      use "files" {}
    }
  }

  deploy {
    use "process" {
      command = ["python3", "app.py"]
      count   = 2
    }
  }

  release {
    use "process" {}
  }
}
