# Cairn's docker example: a static web server (busybox httpd) in an image
# built FROM scratch, run as two containers on the local Docker engine with
# the Cairn entrypoint injected. Needs Docker and Debian's busybox-static
# (/bin/busybox); see README.md.
project = "docker-hello"

app "web" {
  config {
    env = {
      GREETING = "Hello from Cairn in a container"
    }
  }

  build {
    use "docker" {}

    # The image's only program: a static busybox copied into the context.
    hook {
      when    = "before"
      command = ["cp", "/bin/busybox", "busybox"]
    }
  }

  deploy {
    use "docker" {
      count        = 2
      service_port = 3000
      probe_path   = "/"
    }
  }
}
