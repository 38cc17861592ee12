//! Credentials stay on the runner (issue 19): what a job's plugins print goes
//! to the cluster (job events, the operation's recorded output), so the
//! runner masks every credential it knows of before a line leaves it.
//!
//! What counts as a credential:
//! - the runner's own environment variables whose names say so (`…TOKEN…`,
//!   `…SECRET…`, `…PASSWORD…`, `…PASSWD…`, `…CREDENTIAL…`, `…PRIVATE_KEY…`,
//!   `…API_KEY…`, `…ACCESS_KEY…`, `…AUTH…`), at least [`MIN_ENV_SECRET`]
//!   bytes long;
//! - the values of the config's `sensitive = true` input variables, as the
//!   runner evaluated them;
//! - the string fields of the app's plugin configurations whose names say
//!   so (`password`, `auth`, `encoded_auth`, `token`, …, at any depth);
//!
//! each at least [`MIN_SECRET`] bytes long (shorter ones would mask ordinary
//! words). Each occurrence becomes [`MASK`].

use std::borrow::Cow;
use std::sync::RwLock;

use cairn_protocol::api::{JobEvent, RunnerToNode};

/// What a credential is replaced by.
pub const MASK: &str = "********";
/// Shortest value masked.
pub const MIN_SECRET: usize = 4;
/// Shortest environment value masked by its variable's name alone.
pub const MIN_ENV_SECRET: usize = 8;

const CREDENTIAL_WORDS: [&str; 9] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "PRIVATE_KEY",
    "API_KEY",
    "ACCESS_KEY",
    "AUTH",
];

/// Whether a variable or field name says it holds a credential.
pub fn credential_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    CREDENTIAL_WORDS.iter().any(|w| upper.contains(w))
}

/// The credentials a job's runner knows of (shared by the job's steps).
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first, so that a secret containing another is masked whole.
    secrets: RwLock<Vec<String>>,
}

impl Masker {
    /// The runner's own credentials, from its environment.
    pub fn from_env() -> Masker {
        let m = Masker::default();
        for (k, v) in std::env::vars() {
            if credential_name(&k) && v.len() >= MIN_ENV_SECRET {
                m.add(&v);
            }
        }
        m
    }

    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET || secret == MASK {
            return;
        }
        let mut s = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        if !s.iter().any(|x| x == secret) {
            s.push(secret.to_string());
            s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    /// Add the sensitive variables' values and the credential fields of the
    /// app's plugin configurations.
    pub fn add_config(&self, cfg: &crate::config::Config, app: &crate::config::AppConfig) {
        for v in &cfg.variables {
            if let (true, Some(value)) = (v.sensitive, &v.value) {
                match &value.value {
                    serde_json::Value::String(s) => self.add(s),
                    serde_json::Value::Null => {}
                    other => {
                        self.add(&other.to_string());
                        walk(other, false, self);
                    }
                }
            }
        }
        if let Ok(json) = serde_json::to_value(app) {
            walk(&json, false, self);
        }
    }

    /// `text` with every known credential masked.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let s = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Cow::Borrowed(text);
        for secret in s.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        out
    }

    fn mask_in_place(&self, text: &mut String) {
        if let Cow::Owned(m) = self.mask(text) {
            *text = m;
        }
    }

    /// A frame with every text it carries masked.
    pub fn mask_frame(&self, mut msg: RunnerToNode) -> RunnerToNode {
        match &mut msg {
            RunnerToNode::Event(ev) => self.mask_event(ev),
            RunnerToNode::Done { error: Some(e), .. } => self.mask_in_place(e),
            RunnerToNode::Decline { reason } => self.mask_in_place(reason),
            _ => {}
        }
        msg
    }

    fn mask_event(&self, ev: &mut JobEvent) {
        match ev {
            JobEvent::Output { line, .. } => self.mask_in_place(line),
            JobEvent::Step {
                detail: Some(d), ..
            } => self.mask_in_place(d),
            JobEvent::Result { value, .. } => self.mask_in_place(value),
            JobEvent::Finished { error: Some(e), .. } => self.mask_in_place(e),
            _ => {}
        }
    }
}

/// Add the string values under credential-named keys (`inside`: the key
/// above was one).
fn walk(v: &serde_json::Value, inside: bool, m: &Masker) {
    match v {
        serde_json::Value::String(s) if inside => m.add(s),
        serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, inside, m)),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                walk(v, inside || credential_name(k), m);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_wherever_they_appear() {
        let m = Masker::default();
        m.add("s3cr3t-value");
        m.add("abc"); // too short to mask
        m.add("s3cr3t"); // inside the longer one: that one is masked whole
        assert_eq!(
            m.mask("token=s3cr3t-value and s3cr3t; abc"),
            "token=******** and ********; abc"
        );
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
        let frame = m.mask_frame(RunnerToNode::Event(JobEvent::Output {
            step: 1,
            stream: cairn_protocol::types::Stream::Stdout,
            line: "using s3cr3t-value".into(),
        }));
        assert!(!format!("{frame:?}").contains("s3cr3t"), "{frame:?}");
        let done = m.mask_frame(RunnerToNode::Done {
            state: cairn_protocol::types::JobState::Error,
            error: Some("login with s3cr3t failed".into()),
        });
        assert!(!format!("{done:?}").contains("s3cr3t"), "{done:?}");
    }

    #[test]
    fn credential_fields_are_found_at_any_depth() {
        let m = Masker::default();
        let cfg = serde_json::json!({
            "build": {"registry": {"config": {
                "image": "shop/web",
                "auth": {"username": "robot", "password": "hunter22"},
                "encoded_auth": "ZW5jb2RlZA=="
            }}},
            "deploy": {"config": {"api_token": "tok-123456", "count": 2}}
        });
        walk(&cfg, false, &m);
        let text = m.mask("robot hunter22 ZW5jb2RlZA== tok-123456 shop/web");
        assert_eq!(text, "******** ******** ******** ******** shop/web");
        assert!(credential_name("CAIRN_RUNNER_TOKEN"));
        assert!(credential_name("aws_secret_access_key"));
        assert!(!credential_name("PATH"));
    }
}
