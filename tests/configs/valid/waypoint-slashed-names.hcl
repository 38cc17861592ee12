# Waypoint allowed '/' in project and app names; Cairn takes '-' for it and says so.
project = "acme/${workspace.name}/shop"

app "acme/web" {
  build {
    use "docker" {}
  }
  deploy {
    use "docker" {
      service_port = 8080
      static_environment = {
        IMAGE_NAME = app.name
      }
    }
  }
}
