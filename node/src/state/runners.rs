//! Enrolled runners (issue 19): runner tokens, enrollment, adoption.
//!
//! A runner's identity is its id and its key. It enrolls with a CSR: with a
//! runner token it is adopted at once (with the token's labels), else it is
//! recorded *pending* until a user adopts it. Only an adopted record lets a
//! certificate in, and only a certificate for the record's key
//! (`key_fingerprint`): an id taken by one key cannot be enrolled with
//! another until it is forgotten.

use std::collections::BTreeMap;

use cairn_protocol::api::RunnerDecision;
use cairn_protocol::types::{RunnerRecord, RunnerState, TokenRecord, TokenScope};

use super::{Response, State};

/// Most labels a runner (or a runner token) may carry, and their sizes.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_BYTES: usize = 256;

/// Why `labels` cannot be a runner's labels.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels; a runner may have at most {MAX_LABELS}",
            labels.len()
        ));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES {
            return Err(format!(
                "label {k:?}: keys need 1 to {MAX_LABEL_BYTES} bytes, values at most {MAX_LABEL_BYTES}"
            ));
        }
        if k.chars().chain(v.chars()).any(|c| c.is_control()) {
            return Err(format!("label {k:?} holds control characters"));
        }
    }
    Ok(())
}

impl State {
    /// Store a runner token and the labels it gives the runners it enrolls.
    pub(super) fn create_runner_token(
        &mut self,
        record: &TokenRecord,
        labels: &BTreeMap<String, String>,
    ) -> Response {
        if record.scope != TokenScope::Runner {
            return Response::Error("not a runner token".into());
        }
        if let Err(e) = check_labels(labels) {
            return Response::Error(e);
        }
        if self.tokens.contains_key(&record.hash) {
            return Response::Error("token already exists".into());
        }
        self.tokens.insert(record.hash.clone(), record.clone());
        if !labels.is_empty() {
            self.runner_token_labels
                .insert(record.hash.clone(), labels.clone());
        }
        Response::Ok
    }

    /// Enroll runner `id` with the key `key_fingerprint`. `token`: the hash
    /// of the runner token it came with (it is then adopted). Answers
    /// `Value(Some(state))`, the record's state after this.
    pub(super) fn enroll_runner(
        &mut self,
        now: u64,
        id: &str,
        key_fingerprint: &str,
        labels: &BTreeMap<String, String>,
        token: Option<&str>,
    ) -> Response {
        if let Err(e) = cairn_protocol::pki::check_runner_id(id) {
            return Response::Error(e);
        }
        if let Err(e) = check_labels(labels) {
            return Response::Error(e);
        }
        let adopted_by = match token {
            None => None,
            Some(hash) => match self.token(hash, now) {
                Some(t) if t.scope == TokenScope::Runner => Some((
                    format!("token:{}", t.name),
                    self.runner_token_labels
                        .get(hash)
                        .cloned()
                        .unwrap_or_default(),
                )),
                _ => {
                    return Response::Error(
                        "the runner token is not valid (unknown, expired or revoked)".into(),
                    )
                }
            },
        };
        // The token's labels win over the runner's own.
        let merged = |own: &BTreeMap<String, String>, given: &BTreeMap<String, String>| {
            let mut all = own.clone();
            all.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
            all
        };
        if let Some(rec) = self.runner_records.get_mut(id) {
            if rec.key_fingerprint != key_fingerprint {
                return Response::Error(format!(
                    "runner id {id} is enrolled with another key; pick another id, or forget that runner first (`cairn runner forget {id}`)"
                ));
            }
            match (rec.state, adopted_by) {
                (RunnerState::Rejected, _) => {
                    return Response::Error(format!(
                        "runner {id} was rejected{}; a user can forget it (`cairn runner forget {id}`) so that it may enroll again",
                        rec.decided_by
                            .as_ref()
                            .map(|b| format!(" by {b}"))
                            .unwrap_or_default()
                    ))
                }
                (RunnerState::Pending, Some((by, given))) => {
                    rec.state = RunnerState::Adopted;
                    rec.labels = merged(labels, &given);
                    rec.decided_by = Some(by);
                    rec.decided_ms = Some(now);
                }
                (RunnerState::Pending, None) => rec.labels = labels.clone(),
                (RunnerState::Adopted, _) => {}
            }
            return Response::Value(Some(rec.state.word().to_string()));
        }
        let (state, labels, decided_by, decided_ms) = match adopted_by {
            Some((by, given)) => (
                RunnerState::Adopted,
                merged(labels, &given),
                Some(by),
                Some(now),
            ),
            None => (RunnerState::Pending, labels.clone(), None, None),
        };
        self.runner_records.insert(
            id.to_string(),
            RunnerRecord {
                id: id.to_string(),
                state,
                labels,
                key_fingerprint: key_fingerprint.to_string(),
                enrolled_ms: now,
                decided_by,
                decided_ms,
            },
        );
        Response::Value(Some(state.word().to_string()))
    }

    /// Adopt, reject or forget runner `id` (`by`: the user).
    pub(super) fn decide_runner(
        &mut self,
        now: u64,
        id: &str,
        decision: RunnerDecision,
        by: &str,
    ) -> Response {
        if decision == RunnerDecision::Forget {
            return match self.runner_records.remove(id) {
                Some(_) => {
                    self.runners.remove(id);
                    Response::Ok
                }
                None => Response::Error(format!("no enrolled runner {id}")),
            };
        }
        let Some(rec) = self.runner_records.get_mut(id) else {
            return Response::Error(format!("no enrolled runner {id}"));
        };
        rec.state = match decision {
            RunnerDecision::Adopt => RunnerState::Adopted,
            _ => RunnerState::Rejected,
        };
        rec.decided_by = Some(by.to_string());
        rec.decided_ms = Some(now);
        Response::Ok
    }

    /// Whether a certificate for runner `id` with key `key_fingerprint` may
    /// connect: `Err` says why not.
    pub fn runner_admitted(
        &self,
        id: &str,
        key_fingerprint: &str,
    ) -> Result<&RunnerRecord, String> {
        let Some(rec) = self.runner_records.get(id) else {
            return Err(format!(
                "runner {id} is not enrolled in this cluster (it was forgotten?)"
            ));
        };
        if rec.key_fingerprint != key_fingerprint {
            return Err(format!(
                "runner {id} is enrolled with another key (this certificate is from an earlier enrollment)"
            ));
        }
        match rec.state {
            RunnerState::Adopted => Ok(rec),
            RunnerState::Pending => Err(format!("runner {id} waits to be adopted")),
            RunnerState::Rejected => Err(format!("runner {id} was rejected")),
        }
    }
}
