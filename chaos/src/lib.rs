//! Chaos harness (issue 3).
