//! The file `cairn server snapshot save FILE` writes and `cairn-node
//! --restore FILE` reads:
//!
//! ```text
//! offset 0   8 bytes   magic "CAIRNSNP"
//! offset 8   4 bytes   format version, u32 little-endian (SNAPSHOT_FILE_VERSION)
//! offset 12  …         version 4: `State` in the node's current record
//!                      format (`raft::format`: self-describing, so a state
//!                      with fields added later still reads);
//!                      version 3 (release 0.1.0): the bincode (standard
//!                      config) of `state::v0::State`
//! ```
//!
//! A reader takes every version from [`OLDEST_SNAPSHOT_FILE_VERSION`] on and
//! refuses a file without the magic (not a snapshot), of a version it does not
//! know (naming what to do), or whose body does not decode exactly (truncated
//! or trailing bytes), each with a one-line reason.

use super::format;
use crate::state::{v0, State};

/// First bytes of every snapshot file.
pub const SNAPSHOT_FILE_MAGIC: [u8; 8] = *b"CAIRNSNP";
/// Version of the snapshot file's body this build writes.
pub const SNAPSHOT_FILE_VERSION: u32 = 4;
/// The oldest version this build reads (release 0.1.0's).
pub const OLDEST_SNAPSHOT_FILE_VERSION: u32 = 3;
/// Magic plus version.
pub const SNAPSHOT_FILE_HEADER_LEN: usize = 12;

/// Why bytes are not a snapshot this build can restore.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("not a Cairn snapshot file (it does not start with \"CAIRNSNP\"; write one with `cairn server snapshot save`)")]
    NotASnapshot,
    #[error("snapshot file format version {found}, but this cairn-node reads versions {oldest} to {newest}{advice}", oldest = OLDEST_SNAPSHOT_FILE_VERSION, newest = SNAPSHOT_FILE_VERSION, advice = if *found > SNAPSHOT_FILE_VERSION { " (a newer release wrote it: restore it with that release or newer)" } else { "" })]
    Version { found: u32 },
    #[error("snapshot file format version {version} is damaged: {reason}")]
    Damaged { version: u32, reason: String },
}

/// The header for `version`.
pub fn header(version: u32) -> [u8; SNAPSHOT_FILE_HEADER_LEN] {
    let mut h = [0u8; SNAPSHOT_FILE_HEADER_LEN];
    h[..8].copy_from_slice(&SNAPSHOT_FILE_MAGIC);
    h[8..].copy_from_slice(&version.to_le_bytes());
    h
}

/// A snapshot file's bytes for `state`.
pub fn encode_snapshot_file(state: &State) -> Result<Vec<u8>, super::DbError> {
    let mut out = header(SNAPSHOT_FILE_VERSION).to_vec();
    out.extend_from_slice(&format::encode(state)?);
    Ok(out)
}

/// The state in a snapshot file's bytes.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<State, SnapshotFileError> {
    if bytes.len() < SNAPSHOT_FILE_MAGIC.len() || bytes[..8] != SNAPSHOT_FILE_MAGIC {
        return Err(SnapshotFileError::NotASnapshot);
    }
    let Some(version) = bytes.get(8..SNAPSHOT_FILE_HEADER_LEN) else {
        return Err(SnapshotFileError::Damaged {
            version: 0,
            reason: "the header is cut short".into(),
        });
    };
    let found = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
    if !(OLDEST_SNAPSHOT_FILE_VERSION..=SNAPSHOT_FILE_VERSION).contains(&found) {
        return Err(SnapshotFileError::Version { found });
    }
    let body = &bytes[SNAPSHOT_FILE_HEADER_LEN..];
    let damaged = |reason: String| SnapshotFileError::Damaged {
        version: found,
        reason,
    };
    if found >= 4 {
        let state: State = format::decode_exact(body).map_err(|e| damaged(e.to_string()))?;
        return Ok(state);
    }
    let (state, used): (v0::State, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| damaged(e.to_string()))?;
    if used != body.len() {
        return Err(damaged(format!(
            "{} bytes after the state",
            body.len() - used
        )));
    }
    Ok(state.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Request};

    fn some_state() -> State {
        let mut st = State::default();
        st.apply(&Request {
            now_ms: 1,
            command: Command::Put {
                key: "k".into(),
                value: "v".into(),
            },
        });
        st
    }

    #[test]
    fn round_trips_with_the_header_first() {
        let st = some_state();
        let bytes = encode_snapshot_file(&st).expect("encode");
        assert_eq!(&bytes[..8], b"CAIRNSNP");
        assert_eq!(&bytes[8..12], &SNAPSHOT_FILE_VERSION.to_le_bytes());
        assert_eq!(decode_snapshot_file(&bytes).expect("decode"), st);
    }

    #[test]
    fn refuses_what_is_not_a_snapshot() {
        for bad in [
            &b""[..],
            b"CAIRN",
            b"not a snapshot at all",
            b"cairnsnp\x01\0\0\0",
        ] {
            assert!(
                matches!(
                    decode_snapshot_file(bad),
                    Err(SnapshotFileError::NotASnapshot)
                ),
                "{bad:?}"
            );
        }
        // A headerless state (as saved before the header existed).
        let legacy = bincode::serde::encode_to_vec(
            v0::State::from(&some_state()),
            bincode::config::standard(),
        )
        .expect("enc");
        assert!(matches!(
            decode_snapshot_file(&legacy),
            Err(SnapshotFileError::NotASnapshot)
        ));
    }

    #[test]
    fn refuses_another_version_naming_both() {
        let mut bytes = encode_snapshot_file(&some_state()).expect("encode");
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        let e = decode_snapshot_file(&bytes).expect_err("version 7");
        assert!(
            matches!(e, SnapshotFileError::Version { found: 7 }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("version 7")
                && msg.contains(&format!(
                    "versions {OLDEST_SNAPSHOT_FILE_VERSION} to {SNAPSHOT_FILE_VERSION}"
                ))
                && msg.contains("a newer release wrote it"),
            "{msg}"
        );
    }

    #[test]
    fn reads_release_0_1_files_and_a_state_with_fields_it_lacks() {
        // Version 3: release 0.1.0's body.
        let st = some_state();
        let mut old = header(3).to_vec();
        bincode::serde::encode_into_std_write(
            v0::State::from(&st),
            &mut old,
            bincode::config::standard(),
        )
        .expect("encode");
        assert_eq!(decode_snapshot_file(&old).expect("version 3"), st);
        // Version 4 written with a cluster version reads it back.
        let mut later = st.clone();
        later.cluster_version = Some(5);
        let bytes = encode_snapshot_file(&later).expect("encode");
        assert_eq!(
            decode_snapshot_file(&bytes).expect("v4").cluster_version,
            Some(5)
        );
    }

    #[test]
    fn refuses_a_damaged_body() {
        let bytes = encode_snapshot_file(&some_state()).expect("encode");
        assert!(matches!(
            decode_snapshot_file(&bytes[..10]),
            Err(SnapshotFileError::Damaged { .. })
        ));
        assert!(matches!(
            decode_snapshot_file(&bytes[..bytes.len() - 1]),
            Err(SnapshotFileError::Damaged { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        let e = decode_snapshot_file(&longer).expect_err("trailing");
        assert!(e.to_string().contains("1 bytes after"), "{e}");
        let mut old = header(3).to_vec();
        old.extend_from_slice(&[0, 0]);
        assert!(matches!(
            decode_snapshot_file(&old),
            Err(SnapshotFileError::Damaged { version: 3, .. })
        ));
    }
}
