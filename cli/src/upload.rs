//! The source travels with the job (issue 19): for a job that runs on
//! another runner, the CLI packs the app's directory into a tarball and
//! uploads it to the cluster, named by its content (`sha256:…` of the
//! tarball); the runner fetches it from any node.
//!
//! - What is packed: every file under the directory, except what
//!   `.gitignore` (in it and its parents), `.git/info/exclude` and
//!   `.cairnignore` files leave out, and `.git` itself. Symlinks stay links.
//! - The tarball is reproducible (entries sorted, times, owners zeroed), so
//!   the same source is the same digest, and the cluster stores it once
//!   however many jobs use it.
//! - It is written to a temporary file while its digest is computed (a big
//!   tree is never held in memory), and refused past [`MAX_SOURCE_BYTES`]
//!   packed, naming the largest files.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Largest packed (gzipped) source a job may carry.
pub const MAX_SOURCE_BYTES: u64 = 512 * 1024 * 1024;
/// The ignore file Cairn reads besides `.gitignore`.
pub const IGNORE_FILE: &str = ".cairnignore";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "the source in {dir} is over the limit of {limit} MB packed (what was packed before stopping: {packed} MB from {files} files). Leave out what the build does not need with a {IGNORE_FILE} file (gitignore syntax); the largest files: {largest}"
    )]
    TooBig {
        dir: String,
        limit: u64,
        packed: u64,
        files: u64,
        largest: String,
    },
}

/// A packed source: the tarball in a temporary file.
pub struct Packed {
    pub file: tempfile::NamedTempFile,
    /// `sha256:<hex>` of the tarball.
    pub digest: String,
    /// Bytes of the tarball.
    pub size: u64,
    /// Files (and links) in it, and their bytes before packing.
    pub files: u64,
    pub raw_bytes: u64,
}

/// Writes through to `inner`, hashing and counting what passes.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    count: u64,
    limit: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.count + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(TOO_BIG));
        }
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

const TOO_BIG: &str = "the packed source is over the limit";

/// The files of `dir` that a job's source holds, sorted by path: (relative
/// path, absolute path). Directories come before what they hold.
pub fn walk(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, PackError> {
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .parents(true)
        .ignore(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| PackError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        out.push((rel.to_path_buf(), path.to_path_buf()));
    }
    Ok(out)
}

/// Pack `dir` (see the module's doc), at most `limit` bytes packed.
pub fn pack(dir: &Path, limit: u64) -> Result<Packed, PackError> {
    let io = |path: &Path, e: std::io::Error| PackError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let entries = walk(dir)?;
    let file = tempfile::NamedTempFile::new().map_err(|e| io(Path::new("(temporary file)"), e))?;
    let out = file.reopen().map_err(|e| io(file.path(), e))?;
    let hashing = Hashing {
        inner: std::io::BufWriter::new(out),
        hash: Sha256::new(),
        count: 0,
        limit,
    };
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut files = 0u64;
    let mut raw_bytes = 0u64;
    let mut sizes: Vec<(u64, PathBuf)> = Vec::new();
    let too_big = |files: u64, packed: u64, sizes: &mut Vec<(u64, PathBuf)>| {
        sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
        let largest: Vec<String> = sizes
            .iter()
            .take(5)
            .map(|(n, p)| format!("{} ({} MB)", p.display(), n / (1024 * 1024)))
            .collect();
        PackError::TooBig {
            dir: dir.display().to_string(),
            limit: limit / (1024 * 1024),
            packed: packed / (1024 * 1024),
            files,
            largest: largest.join(", "),
        }
    };
    for (rel, abs) in &entries {
        let meta = std::fs::symlink_metadata(abs).map_err(|e| io(abs, e))?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let ft = meta.file_type();
        let r = if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, rel, std::io::empty())
        } else if ft.is_symlink() {
            let target = std::fs::read_link(abs).map_err(|e| io(abs, e))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            files += 1;
            tar.append_link(&mut h, rel, &target)
        } else if ft.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if exec { 0o755 } else { 0o644 });
            h.set_size(meta.len());
            files += 1;
            raw_bytes += meta.len();
            sizes.push((meta.len(), rel.clone()));
            let f = std::fs::File::open(abs).map_err(|e| io(abs, e))?;
            tar.append_data(&mut h, rel, f)
        } else {
            // Sockets, fifos, devices: not source.
            continue;
        };
        if let Err(e) = r {
            if e.to_string().contains(TOO_BIG) {
                let packed = tar.get_ref().get_ref().count;
                return Err(too_big(files, packed, &mut sizes));
            }
            return Err(io(abs, e));
        }
    }
    let finish = |e: std::io::Error, files: u64, sizes: &mut Vec<(u64, PathBuf)>| {
        if e.to_string().contains(TOO_BIG) {
            too_big(files, limit, sizes)
        } else {
            io(file.path(), e)
        }
    };
    let gz = match tar.into_inner() {
        Ok(gz) => gz,
        Err(e) => return Err(finish(e, files, &mut sizes)),
    };
    let mut hashing = match gz.finish() {
        Ok(h) => h,
        Err(e) => return Err(finish(e, files, &mut sizes)),
    };
    hashing.flush().map_err(|e| io(file.path(), e))?;
    let digest = format!("sha256:{}", hex::encode(hashing.hash.finalize()));
    Ok(Packed {
        size: hashing.count,
        file,
        digest,
        files,
        raw_bytes,
    })
}

/// Unpack a source tarball (as [`pack`] made it) into `dest`, which must
/// not exist: written beside it first, then renamed, so a half-unpacked
/// source is never taken for a whole one. Entries may not leave `dest`.
pub fn unpack(tarball: &Path, dest: &Path) -> Result<(), PackError> {
    let io = |path: &Path, e: std::io::Error| PackError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(parent)
        .map_err(|e| io(parent, e))?;
    let f = std::fs::File::open(tarball).map_err(|e| io(tarball, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    // `unpack` refuses entries that would land outside the directory.
    archive.unpack(tmp.path()).map_err(|e| io(tarball, e))?;
    let kept = tmp.keep();
    match std::fs::rename(&kept, dest) {
        Ok(()) => Ok(()),
        // Another job unpacked the same source meanwhile: theirs is as good.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&kept);
            Ok(())
        }
        Err(e) => Err(io(dest, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        std::fs::create_dir_all(p.join("src/deep")).expect("mkdir");
        std::fs::create_dir_all(p.join(".git/objects")).expect("mkdir");
        std::fs::create_dir_all(p.join("target")).expect("mkdir");
        std::fs::write(p.join("cairn.hcl"), "app \"web\" {}\n").expect("write");
        std::fs::write(p.join("src/deep/main.sh"), "echo hi\n").expect("write");
        std::fs::write(p.join(".git/objects/x"), "git").expect("write");
        std::fs::write(p.join("target/big.bin"), vec![1u8; 1000]).expect("write");
        std::fs::write(p.join("secret.env"), "TOKEN=1").expect("write");
        std::fs::write(p.join(".gitignore"), "target/\n").expect("write");
        std::fs::write(p.join(IGNORE_FILE), "*.env\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            p.join("src/deep/main.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("deep/main.sh", p.join("src/run")).expect("symlink");
        d
    }

    #[test]
    fn ignore_files_and_git_are_left_out_and_the_digest_is_reproducible() {
        let d = tree();
        let names: Vec<String> = walk(d.path())
            .expect("walk")
            .into_iter()
            .map(|(r, _)| r.display().to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                ".cairnignore",
                ".gitignore",
                "cairn.hcl",
                "src",
                "src/deep",
                "src/deep/main.sh",
                "src/run"
            ]
        );
        let a = pack(d.path(), MAX_SOURCE_BYTES).expect("pack");
        // Touching a file's time changes nothing; its content does.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.path().join("cairn.hcl"), "app \"web\" {}\n").expect("write");
        let b = pack(d.path(), MAX_SOURCE_BYTES).expect("pack");
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.files, 5);
        std::fs::write(d.path().join("cairn.hcl"), "app \"api\" {}\n").expect("write");
        let c = pack(d.path(), MAX_SOURCE_BYTES).expect("pack");
        assert_ne!(a.digest, c.digest);
        // Unpacked: the same files, the exec bit and the link kept.
        let out = tempfile::tempdir().expect("tempdir");
        let dest = out.path().join("src-a");
        unpack(a.file.path(), &dest).expect("unpack");
        assert_eq!(
            std::fs::read_to_string(dest.join("src/deep/main.sh")).expect("read"),
            "echo hi\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join("src/deep/main.sh"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{mode:o}");
        assert_eq!(
            std::fs::read_link(dest.join("src/run")).expect("link"),
            Path::new("deep/main.sh")
        );
        assert!(!dest.join("secret.env").exists());
        assert!(!dest.join("target").exists());
        assert!(!dest.join(".git").exists());
    }

    #[test]
    fn a_source_over_the_limit_is_refused_naming_its_largest_files() {
        let d = tempfile::tempdir().expect("tempdir");
        // Random bytes do not compress.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                // xorshift64: bytes gzip cannot shrink.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        std::fs::write(d.path().join("blob.bin"), &noise).expect("write");
        std::fs::write(d.path().join("small.txt"), "x").expect("write");
        let e = pack(d.path(), 100_000).err().expect("over the limit");
        let text = e.to_string();
        assert!(text.contains("over the limit"), "{text}");
        assert!(text.contains("blob.bin"), "{text}");
        assert!(text.contains(IGNORE_FILE), "{text}");
    }
}
