//! The one error type of the service layer: a kind that every transport maps to its own
//! terms (a QUIC `Error` or `Unavailable` answer, an HTTP status), and a message for a
//! person.

use cairn_protocol::api::ClientResponse;

/// What kind of failure a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// What the request names does not exist.
    NotFound,
    /// The caller is not allowed to do this (its token's scope).
    Refused,
    /// The state does not allow it now (a job that already finished, a name taken).
    Conflict,
    /// The request itself is wrong (a bad name, a value too large).
    Invalid,
    /// Nothing was done: no leader could be reached from this node. Another member may
    /// serve it.
    Unavailable,
    /// The request may or may not have taken effect (the leader's answer was lost).
    OutcomeUnknown,
    /// A bug or a broken invariant on this node.
    Internal,
}

impl ErrorKind {
    /// The HTTP status a request failing this way gets.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::Refused => 403,
            ErrorKind::Conflict => 409,
            ErrorKind::Invalid => 400,
            ErrorKind::Unavailable => 503,
            ErrorKind::OutcomeUnknown => 504,
            ErrorKind::Internal => 500,
        }
    }
}

/// A failed request: its kind and what to tell the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }
    pub fn refused(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Refused, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Conflict, message)
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Invalid, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// A refusal of the state machine (`Response::Error`): its messages say "no …" for
    /// what does not exist; anything else is the state not allowing it.
    pub fn refusal(message: String) -> ApiError {
        let m = message.as_str();
        let missing =
            m.starts_with("no ") || m.starts_with("there is no ") || m.contains(" has no ");
        ApiError::new(
            if missing {
                ErrorKind::NotFound
            } else {
                ErrorKind::Conflict
            },
            message,
        )
    }

    /// The cluster could not serve the request from here ([`crate::cluster::ClusterError`]).
    pub fn cluster(e: crate::cluster::ClusterError) -> ApiError {
        ApiError::new(
            if e.retry_elsewhere {
                ErrorKind::Unavailable
            } else {
                ErrorKind::OutcomeUnknown
            },
            e.message,
        )
    }

    /// The same error with `context: ` before its message.
    pub fn context(self, context: &str) -> ApiError {
        ApiError {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }

    /// The QUIC answer: `Unavailable` tells the client to try another member.
    pub fn into_response(self) -> ClientResponse {
        match self.kind {
            ErrorKind::Unavailable => ClientResponse::Unavailable {
                message: self.message,
            },
            _ => ClientResponse::Error {
                message: self.message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_and_map_to_transports() {
        assert_eq!(
            ApiError::refusal("no job 7".into()).kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            ApiError::refusal("project \"p\" has no app \"a\"".into()).kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            ApiError::refusal("job 7 is done, not running".into()).kind,
            ErrorKind::Conflict
        );
        let e = ApiError::cluster(crate::cluster::ClusterError {
            message: "no leader".into(),
            retry_elsewhere: true,
        });
        assert_eq!(e.kind.http_status(), 503);
        assert!(matches!(
            e.into_response(),
            ClientResponse::Unavailable { .. }
        ));
        let e = ApiError::cluster(crate::cluster::ClusterError {
            message: "lost".into(),
            retry_elsewhere: false,
        });
        assert_eq!(e.kind, ErrorKind::OutcomeUnknown);
        assert!(matches!(e.into_response(), ClientResponse::Error { .. }));
    }
}
