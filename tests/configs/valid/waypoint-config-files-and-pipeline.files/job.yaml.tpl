name: ${app}
