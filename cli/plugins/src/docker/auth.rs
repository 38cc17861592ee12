//! Registry credentials: Waypoint's `auth { … }` block, `encoded_auth`,
//! `username`/`password`, or the runner's own docker config. They stay on the
//! runner: never in a value, never printed (`Debug` hides them).

use std::path::PathBuf;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

use crate::PluginError;

/// The `auth { … }` block (Waypoint's field names, camelCase included).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default, rename = "serverAddress")]
    pub server_address: Option<String>,
    #[serde(default, rename = "identityToken")]
    pub identity_token: Option<String>,
    #[serde(default, rename = "registryToken")]
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("hostname", &self.hostname)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Auth {
    fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: self.username.clone(),
            password: self.password.clone(),
            auth: self.auth.clone(),
            email: self.email.clone(),
            serveraddress: self.server_address.clone(),
            identitytoken: self.identity_token.clone(),
            registrytoken: self.registry_token.clone(),
        }
    }
}

/// What a plugin was given to sign in with.
#[derive(Clone, Default)]
pub struct Given<'a> {
    pub encoded_auth: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub auth: Option<&'a Auth>,
}

/// Credentials for `registry` (a host such as `127.0.0.1:5000`), and where
/// they came from ("encoded_auth", "the auth block", …) for messages.
pub fn resolve(
    plugin: &str,
    registry: &str,
    given: &Given,
) -> Result<(Option<DockerCredentials>, &'static str), PluginError> {
    if let Some(encoded) = given.encoded_auth {
        return Ok((Some(decode_encoded(plugin, encoded)?), "encoded_auth"));
    }
    if given.username.is_some() || given.password.is_some() {
        return Ok((
            Some(DockerCredentials {
                username: given.username.map(str::to_string),
                password: given.password.map(str::to_string),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            }),
            "username and password",
        ));
    }
    if let Some(a) = given.auth {
        let mut c = a.credentials();
        if c.serveraddress.is_none() {
            c.serveraddress = Some(registry.to_string());
        }
        return Ok((Some(c), "the auth block"));
    }
    Ok(match from_docker_config(registry) {
        Some(c) => (Some(c), "the runner's docker config"),
        None => (None, "no credentials"),
    })
}

/// `encoded_auth`: base64 of the JSON `AuthConfig` the docker CLI sends.
fn decode_encoded(plugin: &str, encoded: &str) -> Result<DockerCredentials, PluginError> {
    #[derive(Deserialize, Default)]
    struct AuthConfig {
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        email: Option<String>,
        #[serde(default, alias = "serverAddress")]
        serveraddress: Option<String>,
        #[serde(default, alias = "identityToken")]
        identitytoken: Option<String>,
        #[serde(default, alias = "registryToken")]
        registrytoken: Option<String>,
    }
    let bad = |why: &str| crate::config_error(plugin, "encoded_auth", why);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded.trim()))
        .map_err(|_| bad("is not base64"))?;
    let c: AuthConfig = serde_json::from_slice(&bytes)
        .map_err(|_| bad("is not the base64 of a JSON auth config"))?;
    Ok(DockerCredentials {
        username: c.username,
        password: c.password,
        auth: c.auth,
        email: c.email,
        serveraddress: c.serveraddress,
        identitytoken: c.identitytoken,
        registrytoken: c.registrytoken,
    })
}

/// The runner's docker config (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`): its `auths` entry for `registry`. Credential
/// helpers (`credsStore`) are not run.
fn from_docker_config(registry: &str) -> Option<DockerCredentials> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => dirs::home_dir()?.join(".docker/config.json"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let keys: Vec<String> = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    };
    let entry = keys.iter().find_map(|k| auths.get(k))?;
    let s = |k: &str| entry.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let mut c = DockerCredentials {
        serveraddress: Some(registry.to_string()),
        identitytoken: s("identitytoken"),
        ..Default::default()
    };
    if let Some(auth) = s("auth") {
        let plain = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let plain = String::from_utf8(plain).ok()?;
        let (user, pass) = plain.split_once(':')?;
        c.username = Some(user.to_string());
        c.password = Some(pass.to_string());
    }
    Some(c)
}

/// The registry host of an image reference: its first path component when that
/// looks like a host (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// Whether an engine message says the registry refused the credentials.
pub fn is_auth_refusal(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("unauthorized")
        || m.contains("authentication required")
        || m.contains("no basic auth credentials")
        || m.contains("denied")
        || m.contains("incorrect username or password")
}
