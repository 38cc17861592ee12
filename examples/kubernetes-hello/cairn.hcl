# Cairn's kubernetes example: the docker example's static web server (busybox httpd in an
# image built FROM scratch, the Cairn entrypoint injected), pushed to a registry the
# cluster's nodes pull from, run as a 2-pod Deployment and released behind a Service.
# Needs Docker, Debian's busybox-static (/bin/busybox), a registry and a cluster the
# runner's KUBECONFIG reaches; see README.md.
project = "kubernetes-hello"

variable "registry" {
  default     = "127.0.0.1:5000"
  type        = string
  description = "The registry the image is pushed to and the cluster's nodes pull from."
}

app "web" {
  config {
    env = {
      GREETING = "Hello from Cairn on Kubernetes"
    }
  }

  build {
    use "docker" {}

    # The image's only program: a static busybox copied into the context.
    hook {
      when    = "before"
      command = ["cp", "/bin/busybox", "busybox"]
    }

    registry {
      use "docker" {
        image = "${var.registry}/kubernetes-hello/web"
        tag   = "latest"
      }
    }
  }

  deploy {
    use "kubernetes" {
      replicas     = 2
      service_port = 3000
      probe_path   = "/"
    }
  }

  release {
    use "kubernetes" {
      port = 80
    }
  }
}
