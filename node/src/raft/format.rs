//! How the node keeps a value on disk: the Raft log's entries and meta, the
//! state machine's snapshot, and the snapshot data sent to followers.
//!
//! ```text
//! format 1 (this release on):  0xFF 'C' 0x01  CBOR of the value
//! format 0 (release 0.1.0):    bincode (standard config) of the value
//! ```
//!
//! - **Format 1** is self-describing: structs are maps keyed by field name and
//!   enum variants are named. A field added in a later release carries
//!   `#[serde(default)]` and reads as its default from what an earlier
//!   release wrote; a new command or enum variant needs nothing (older files
//!   cannot hold it). A change that is not an addition (a rename, a new
//!   meaning) bumps [`FORMAT`] and converts the older form on load, as
//!   format 0 is converted here.
//! - **Format 0** is what release 0.1.0 wrote: bincode, which has no field
//!   names, so it is decoded into the types as they were in 0.1.0 (the
//!   `Legacy` type of [`decode_or_legacy`], e.g. [`crate::state::v0`]) and
//!   converted. No format-0 value can start with 0xFF: each of them starts
//!   with a varint (which never takes the tag 255) or an `Option` tag (0 or 1).
//! - Values are read in either format, whatever the file, so a log written
//!   by 0.1.0 and appended to by this release reads back whole; nothing is
//!   rewritten in place (a node rolled back to 0.1.0 before it compacts its
//!   log still has the entries 0.1.0 wrote, but see docs/upgrading.md).
//!
//! The golden files of every release in `tests/fixtures/` must keep loading
//! (`tests/tests/e2e_formats.rs`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::log_store::DbError;

/// The first bytes of a format-1 value (format 0 never starts with 0xFF).
pub const MARK: [u8; 2] = [0xFF, b'C'];
/// The format this build writes.
pub const FORMAT: u8 = 1;

/// The format a node's stores write, shared by its log and state machine
/// stores: format 0 while the cluster version is release 0.1.0's, so that
/// a node can still be rolled back to 0.1.0 in the middle of an upgrade (its
/// data dir then holds nothing 0.1.0 cannot read); [`FORMAT`] once the
/// cluster version says every voter runs a newer release
/// ([`crate::state::Command::SetClusterVersion`], after which there is no
/// going back). Both formats are always read.
#[derive(Debug, Clone)]
pub struct WriteFormat(Arc<AtomicU8>);

impl Default for WriteFormat {
    fn default() -> Self {
        WriteFormat(Arc::new(AtomicU8::new(0)))
    }
}

impl WriteFormat {
    /// The format to write now.
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    /// Follow the state's cluster version.
    pub fn follow(&self, cluster_version: u32) {
        let f = for_cluster_version(cluster_version);
        if self.0.swap(f, Ordering::AcqRel) != f {
            tracing::info!(
                format = f,
                cluster_version,
                "records are written in format {f} from now on"
            );
        }
    }

    /// `value` in the format to write now (its type must be the same in
    /// both: see [`encode_as`]).
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, DbError> {
        encode_as(self.get(), value)
    }
}

/// The format records of a state at `cluster_version` are written in.
pub fn for_cluster_version(cluster_version: u32) -> u8 {
    if cluster_version > cairn_protocol::handshake::V0_1_PROTOCOL_VERSION {
        FORMAT
    } else {
        0
    }
}

/// `value` in `format` (0 or [`FORMAT`]). For format 0 the type must have
/// the shape it had in release 0.1.0.
pub fn encode_as<T: Serialize>(format: u8, value: &T) -> Result<Vec<u8>, DbError> {
    if format == 0 {
        encode_legacy(value)
    } else {
        encode(value)
    }
}

/// `value` in the current format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DbError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MARK);
    out.push(FORMAT);
    ciborium::into_writer(value, &mut out).map_err(|e| DbError::Format(e.to_string()))?;
    Ok(out)
}

/// Which format `bytes` are in.
pub fn format_of(bytes: &[u8]) -> Result<u8, DbError> {
    if bytes.starts_with(&MARK) {
        match bytes.get(MARK.len()) {
            Some(&f) if f >= 1 && f <= FORMAT => Ok(f),
            Some(&f) => Err(DbError::Format(format!(
                "stored in format {f}, but this cairn-node reads formats 0 to {FORMAT}: \
                 a newer release wrote it (upgrade this node, see docs/upgrading.md)"
            ))),
            None => Err(DbError::Format("a record cut short".into())),
        }
    } else {
        Ok(0)
    }
}

/// A value whose type has not changed since release 0.1.0.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    decode_or_legacy::<T, T>(bytes)
}

/// A value in either format; format 0 is decoded as `Legacy` (the type as
/// release 0.1.0 had it) and converted.
pub fn decode_or_legacy<T, Legacy>(bytes: &[u8]) -> Result<T, DbError>
where
    T: DeserializeOwned,
    Legacy: DeserializeOwned + Into<T>,
{
    match format_of(bytes)? {
        0 => {
            let (v, _): (Legacy, usize) =
                bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
            Ok(v.into())
        }
        _ => ciborium::from_reader(&bytes[MARK.len() + 1..])
            .map_err(|e| DbError::Format(format!("a damaged record: {e}"))),
    }
}

/// A format-1 value that must fill `bytes` exactly (a file's body):
/// the error says how many bytes are left over.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    if format_of(bytes)? == 0 {
        return Err(DbError::Format("not in a record format".into()));
    }
    let mut rest = &bytes[MARK.len() + 1..];
    let v = ciborium::from_reader(&mut rest)
        .map_err(|e| DbError::Format(format!("a damaged record: {e}")))?;
    if !rest.is_empty() {
        return Err(DbError::Format(format!(
            "{} bytes after the record",
            rest.len()
        )));
    }
    Ok(v)
}

/// `value` as release 0.1.0 wrote it (format 0): for a peer that speaks
/// only that release's protocol.
pub fn encode_legacy<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    Ok(bincode::serde::encode_to_vec(
        value,
        bincode::config::standard(),
    )?)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Before {
        a: u64,
        b: String,
    }

    /// The same record a release later: one more field, with a default.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct After {
        a: u64,
        b: String,
        #[serde(default)]
        c: Vec<u32>,
    }

    impl From<Before> for After {
        fn from(v: Before) -> After {
            After {
                a: v.a,
                b: v.b,
                c: Vec::new(),
            }
        }
    }

    #[test]
    fn a_field_added_later_reads_as_its_default_from_older_records() {
        let old = encode(&Before {
            a: 7,
            b: "x".into(),
        })
        .expect("encode");
        assert_eq!(&old[..3], &[0xFF, b'C', 1]);
        let read: After = decode(&old).expect("decode");
        assert_eq!(
            read,
            After {
                a: 7,
                b: "x".into(),
                c: vec![]
            }
        );
        // And a newer record read by the older type ignores what it lacks.
        let new = encode(&After {
            a: 1,
            b: "y".into(),
            c: vec![3],
        })
        .expect("encode");
        let back: Before = decode(&new).expect("decode");
        assert_eq!(back.a, 1);
    }

    #[test]
    fn format_0_is_read_through_the_legacy_type() {
        let legacy = encode_legacy(&Before {
            a: 300,
            b: "old".into(),
        })
        .expect("encode");
        assert_eq!(format_of(&legacy).expect("format"), 0);
        let read: After = decode_or_legacy::<After, Before>(&legacy).expect("decode");
        assert_eq!(read.b, "old");
        assert_eq!(read.a, 300);
    }

    #[test]
    fn a_newer_format_is_refused_with_what_to_do() {
        let mut bytes = encode(&1u32).expect("encode");
        bytes[2] = FORMAT + 1;
        let e = decode::<u32>(&bytes).expect_err("newer");
        let msg = e.to_string();
        assert!(msg.contains("upgrade this node"), "{msg}");
        assert!(decode::<u32>(&[0xFF, b'C']).is_err());
        assert!(decode::<u32>(&[0xFF, b'C', 1, 0xFF]).is_err());
    }

    #[test]
    fn no_format_0_value_of_the_node_starts_with_the_mark() {
        // Varints of every size and option tags: never 0xFF first.
        for v in [
            0u64,
            250,
            251,
            65_535,
            65_536,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            assert_ne!(encode_legacy(&v).expect("encode")[0], 0xFF, "{v}");
        }
        assert_ne!(encode_legacy(&Some(1u8)).expect("encode")[0], 0xFF);
        assert_ne!(encode_legacy(&None::<u8>).expect("encode")[0], 0xFF);
    }
}
