//! What the CLI remembers between commands about which members of a
//! context's cluster answer: the member that answered last (dialled first
//! next time) and members that did not answer lately (dialled last, for
//! [`DOWN_MEMORY`]). So with a member down, a command does not pay for
//! dialling it first every time.
//!
//! Kept in `<data>/reach/CONTEXT.json`. Best effort: a file that cannot be
//! read or written changes the order of dialling, never a command's outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::paths;

/// How long a member that did not answer is dialled after the others.
pub const DOWN_MEMORY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// The member that answered last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<String>,
    /// Members that did not answer, with when (Unix ms) that stops counting.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub down_until: BTreeMap<String, u64>,
}

fn file(context: &str) -> PathBuf {
    paths::data_dir()
        .join("reach")
        .join(format!("{context}.json"))
}

impl Reach {
    pub fn load(context: &str) -> Reach {
        Reach::load_from(&file(context))
    }

    fn load_from(path: &std::path::Path) -> Reach {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, context: &str) {
        self.save_to(&file(context))
    }

    fn save_to(&self, path: &std::path::Path) {
        let Ok(json) = serde_json::to_vec(self) else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = cairn_node::identity::write_atomic(path, &json, true) {
            tracing::debug!(error = %e, "could not save which members answer");
        }
    }

    /// `addrs` in the order to dial them at `now_ms`: the member that
    /// answered last, then the others as given, then those down lately.
    pub fn order(&self, addrs: &[String], now_ms: u64) -> Vec<String> {
        let down = |a: &String| self.down_until.get(a).is_some_and(|t| *t > now_ms);
        let mut out: Vec<String> = Vec::with_capacity(addrs.len());
        if let Some(a) = &self.answered {
            if addrs.contains(a) && !down(a) {
                out.push(a.clone());
            }
        }
        for a in addrs.iter().filter(|a| !down(a)) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        for a in addrs.iter().filter(|a| down(a)) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// `addr` answered. Returns whether anything changed.
    pub fn answered(&mut self, addr: &str) -> bool {
        let was_down = self.down_until.remove(addr).is_some();
        let changed = self.answered.as_deref() != Some(addr);
        self.answered = Some(addr.to_string());
        was_down || changed
    }

    /// `addr` did not answer (or could not serve) at `now_ms`.
    pub fn down(&mut self, addr: &str, now_ms: u64) {
        if self.answered.as_deref() == Some(addr) {
            self.answered = None;
        }
        self.down_until
            .insert(addr.to_string(), now_ms + DOWN_MEMORY.as_millis() as u64);
        self.down_until.retain(|_, t| *t > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<String> {
        ["a:1", "b:1", "c:1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn order_prefers_who_answered_and_puts_the_down_last() {
        let mut r = Reach::default();
        assert_eq!(r.order(&addrs(), 0), addrs());
        r.down("a:1", 1_000);
        assert!(r.answered("b:1"));
        assert!(!r.answered("b:1"));
        assert_eq!(r.order(&addrs(), 2_000), ["b:1", "c:1", "a:1"]);
        // Once the memory has passed, the context's order is back (after
        // the member that answered).
        let later = 1_000 + DOWN_MEMORY.as_millis() as u64 + 1;
        assert_eq!(r.order(&addrs(), later), ["b:1", "a:1", "c:1"]);
        // The one that answered goes down: it loses its place.
        r.down("b:1", 3_000);
        assert_eq!(r.order(&addrs(), 4_000), ["c:1", "a:1", "b:1"]);
        // A member no longer in the context is ignored.
        r.answered("z:9");
        assert_eq!(r.order(&addrs(), 4_000), ["c:1", "a:1", "b:1"]);
    }

    #[test]
    fn saved_and_loaded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("reach").join("prod.json");
        let mut r = Reach::default();
        r.answered("b:1");
        r.down("a:1", cairn_protocol::now_ms());
        r.save_to(&path);
        assert_eq!(Reach::load_from(&path), r);
        assert_eq!(
            Reach::load_from(&tmp.path().join("none.json")),
            Reach::default()
        );
        std::fs::write(&path, b"not json").expect("write");
        assert_eq!(Reach::load_from(&path), Reach::default());
    }
}
