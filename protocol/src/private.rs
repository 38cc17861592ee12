//! Files only their owner may read: data and config directories 0700,
//! files that hold secrets (or anything a node or the CLI keeps) 0600.
//!
//! [`create_dir`] and [`write`] make them so; [`looser_than_private`] says
//! when a path a user made (or an older release left) lets others in, so
//! that the binaries can warn at start.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes every file and directory this process creates private to its
/// owner unless it sets a mode of its own (umask 077). Called first thing by
/// `cairn` and `cairn-node`.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// The usual umask (022), for processes started on an app's behalf (they
/// create files for the app, not for Cairn).
pub fn usual_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
}

/// Warnings for `dir` and the entries directly in it whose modes let other
/// users in (see [`looser_than_private`]).
pub fn loose_entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = looser_than_private(dir).into_iter().collect();
    if let Ok(entries) = fs::read_dir(dir) {
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        out.extend(paths.iter().filter_map(|p| looser_than_private(p)));
    }
    out
}

/// Mode of the directories Cairn creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files Cairn writes.
pub const FILE_MODE: u32 = 0o600;

/// `create_dir_all` with every directory it creates at [`DIR_MODE`]
/// (directories that exist already are left as they are).
pub fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Writes `bytes` to `path` at [`FILE_MODE`], through a temporary file in the
/// same directory renamed over it (so a reader never sees half a file and a
/// crash never leaves one).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        // A leftover temporary file keeps its old mode through `open`.
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Opens `path` for appending, created at [`FILE_MODE`].
pub fn append(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

/// When `path` exists and its group or others have any access: a warning
/// naming it, its mode and the fix.
pub fn looser_than_private(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return None;
    }
    let want = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
    Some(format!(
        "{} is mode {mode:03o}: other users may read what it holds (secrets among it); Cairn keeps it {want:03o} (chmod {want:o} {})",
        path.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_made_private_and_loose_ones_are_named() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b");
        create_dir(&dir).expect("create");
        assert_eq!(mode(&root.path().join("a")), DIR_MODE);
        assert_eq!(mode(&dir), DIR_MODE);
        let file = dir.join("secret");
        // A file that was world-readable before is private after a write.
        fs::write(&file, "old").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(looser_than_private(&file).is_some_and(|w| w.contains("mode 644")));
        write(&file, b"new").expect("write");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(fs::read_to_string(&file).expect("read"), "new");
        assert_eq!(looser_than_private(&file), None);
        assert_eq!(
            fs::read_dir(&dir).expect("ls").count(),
            1,
            "no temp file left"
        );
        let log = dir.join("log");
        append(&log).expect("append");
        assert_eq!(mode(&log), FILE_MODE);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(looser_than_private(&dir).is_some_and(|w| w.contains("chmod 700")));
    }
}
