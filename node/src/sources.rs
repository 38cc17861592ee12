//! Uploaded job sources (issue 19): content-addressed tarballs a CLI
//! uploads for a job that runs on another runner, which fetches them from
//! whatever node it is connected to.
//!
//! - Stored once per node, named by content (`<data>/sources/sha256-<hex>`):
//!   an upload whose digest the cluster already holds sends no bytes.
//! - A node that does not hold a source a runner asks for fetches it from a
//!   member that does (`PeerRequest::FetchSource`), keeps it, and serves it.
//! - Which nodes hold what is replicated (`Command::RecordSource`); the
//!   bytes are not (a source may be hundreds of MB: not for the Raft log).
//! - Every byte received is checked against the digest before the file is
//!   kept; a file that does not match is never served.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest source a node accepts (the CLI packs no more).
pub const MAX_SOURCE_BYTES: u64 = 512 * 1024 * 1024;
/// Bytes moved per read.
const CHUNK: usize = 256 * 1024;

/// This node's store of sources.
#[derive(Clone)]
pub struct Sources {
    dir: PathBuf,
}

/// Why `digest` cannot name a source.
pub use cairn_protocol::types::source_digest_hex as check_digest;

impl Sources {
    pub fn new(data_dir: &Path) -> Sources {
        Sources {
            dir: data_dir.join("sources"),
        }
    }

    /// The file of `digest` (whether or not it is there).
    pub fn path(&self, digest: &str) -> Result<PathBuf, String> {
        Ok(self.dir.join(format!("sha256-{}", check_digest(digest)?)))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// Read exactly `size` bytes of source `digest` from `recv`, check them,
    /// and keep them. Nothing is kept on any failure.
    pub async fn receive(
        &self,
        digest: &str,
        size: u64,
        recv: &mut quinn::RecvStream,
    ) -> Result<(), String> {
        let dest = self.path(digest)?;
        if size > MAX_SOURCE_BYTES {
            return Err(format!(
                "the source is {size} bytes; the most a node accepts is {MAX_SOURCE_BYTES}"
            ));
        }
        cairn_protocol::private::create_dir(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".receiving-")
            .tempfile_in(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut file = tokio::fs::File::from_std(
            tmp.reopen()
                .map_err(|e| format!("{}: {e}", tmp.path().display()))?,
        );
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = recv
                .read(&mut buf)
                .await
                .map_err(|e| format!("the upload broke off after {got} bytes: {e}"))?;
            let Some(n) = n else { break };
            got += n as u64;
            if got > size {
                return Err(format!("more than the {size} bytes announced were sent"));
            }
            hash.update(&buf[..n]);
            file.write_all(&buf[..n])
                .await
                .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
        }
        if got != size {
            return Err(format!(
                "the upload ended after {got} of the {size} bytes announced"
            ));
        }
        let actual = format!("sha256:{}", hex::encode(hash.finalize()));
        if actual != digest {
            return Err(format!(
                "the bytes received are {actual}, not the {digest} announced"
            ));
        }
        file.sync_all()
            .await
            .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
        tmp.persist(&dest)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        Ok(())
    }

    /// The size of source `digest` here, and a reader of it.
    pub async fn open(&self, digest: &str) -> Result<(u64, tokio::fs::File), String> {
        let path = self.path(digest)?;
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let size = f
            .metadata()
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        Ok((size, f))
    }

    /// Write source `digest`'s bytes to `send` (after whatever header the
    /// caller wrote), then finish it.
    pub async fn send(
        &self,
        mut file: tokio::fs::File,
        send: &mut quinn::SendStream,
    ) -> Result<u64, String> {
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            send.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
            sent += n as u64;
        }
        let _ = send.finish();
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_name_a_file() {
        let s = Sources::new(Path::new("/data"));
        let good = format!("sha256:{}", "a1".repeat(32));
        assert_eq!(
            s.path(&good).expect("path"),
            Path::new("/data/sources").join(format!("sha256-{}", "a1".repeat(32)))
        );
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A1".repeat(32)),
            format!("md5:{}", "a1".repeat(32)),
            "sha256:".to_string(),
        ] {
            assert!(s.path(&bad).is_err(), "{bad}");
        }
    }
}
