//! The static build (`entrypoint/build-static.sh`): the binary is static, small,
//! light at rest, and runs where there is nothing but busybox (an empty root
//! with `env -i`, and a Docker image made from Debian's busybox-static when
//! Docker is available).
//!
//! Each test runs the build script itself (a no-op when nothing changed;
//! about two minutes from scratch, in its own target dir `target/static`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;
use nix::sys::signal::Signal;

/// Upper bounds that catch a regression (a dynamic libc, a debug build, a
/// runaway allocation), not targets.
const MAX_BINARY_BYTES: u64 = 8 * 1024 * 1024;
const MAX_IDLE_RSS_KB: u64 = 8 * 1024;

const IMAGE: &str = "cairn-entrypoint-test:busybox";

/// Builds with the script; returns the binary's path.
fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-static.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).stderr(Stdio::inherit());
        if let Some(cargo) = option_env!("CARGO") {
            cmd.env("CARGO", cargo);
        }
        let out = cmd.output().expect("run build-static.sh");
        assert!(
            out.status.success(),
            "build-static.sh failed: {:?}",
            out.status
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            path.is_file(),
            "build-static.sh printed {path:?}, not a file"
        );
        path
    })
}

fn tool_output(tool: &str, arg: &Path) -> String {
    let out = Command::new(tool)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("this test needs `{tool}`: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// No program interpreter and no DT_NEEDED: nothing to load at run time.
fn assert_elf_has_no_interpreter(bytes: &[u8]) {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(
            bytes[phoff + i * phentsize..phoff + i * phentsize + 4]
                .try_into()
                .expect("4 bytes"),
        );
        assert_ne!(p_type, 3, "PT_INTERP: the binary needs a dynamic loader");
    }
}

#[test]
fn static_binary_is_static_small_and_light() {
    let bin = static_binary();

    let file = tool_output("file", bin);
    assert!(
        file.contains("static-pie linked") || file.contains("statically linked"),
        "file: {file}"
    );
    let ldd = tool_output("ldd", bin);
    assert!(
        ldd.contains("not a dynamic executable") || ldd.contains("statically linked"),
        "ldd: {ldd}"
    );
    let bytes = std::fs::read(bin).expect("read binary");
    assert_elf_has_no_interpreter(&bytes);
    let size = bytes.len() as u64;
    eprintln!(
        "static stripped binary: {size} bytes ({:.2} MiB)",
        size as f64 / 1048576.0
    );
    assert!(size <= MAX_BINARY_BYTES, "{size} bytes");

    // Idle RSS of `cairn-entrypoint sleep 60`.
    let mut child = Command::new(bin)
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let children = format!("/proc/{pid}/task/{pid}/children");
    assert_eventually("the child runs", || {
        !read(Path::new(&children)).trim().is_empty()
    });
    let sleeper = read(Path::new(&children)).trim().to_string();
    assert_eventually("the child is sleep", || {
        read(Path::new(&format!("/proc/{sleeper}/comm"))).trim() == "sleep"
    });
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    eprintln!("idle RSS of `cairn-entrypoint sleep 60`: {rss_kb} kB");
    send_signal(pid, Signal::SIGTERM);
    assert_eq!(
        wait_bounded(&mut child, "static entrypoint").code(),
        Some(128 + 15)
    );
    assert!(rss_kb <= MAX_IDLE_RSS_KB, "{rss_kb} kB");
}

/// A statically linked busybox: `CAIRN_TEST_BUSYBOX`, else Debian's
/// busybox-static, downloaded once (`apt-get download`) next to the build.
fn static_busybox(cache: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_TEST_BUSYBOX") {
        return PathBuf::from(path);
    }
    let busybox = cache.join("x/bin/busybox");
    if busybox.is_file() {
        return busybox;
    }
    std::fs::create_dir_all(cache).expect("busybox cache dir");
    let download = || {
        Command::new("apt-get")
            .args(["download", "-qq", "busybox-static"])
            .current_dir(cache)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        // A fresh machine may have no package lists yet.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        assert!(
            download(),
            "cannot get Debian's busybox-static (apt-get download); set CAIRN_TEST_BUSYBOX to a static busybox"
        );
    }
    let deb = std::fs::read_dir(cache)
        .expect("read cache")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("the downloaded .deb");
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(cache.join("x"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok && busybox.is_file(), "cannot unpack {}", deb.display());
    busybox
}

/// A root with only busybox (and its applet links) and the entrypoint.
fn busybox_root(bin: &Path) -> PathBuf {
    let cache = bin
        .ancestors()
        .nth(3)
        .expect("target/static/<triple>/release/bin")
        .join("busybox");
    let busybox = static_busybox(&cache);
    let root = temp_dir("busybox-root");
    for dir in ["bin", "proc", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep", "cat", "echo", "ls", "cut"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    std::fs::copy(bin, root.join("cairn-entrypoint")).expect("copy entrypoint");
    root
}

fn find_program(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("this test needs `{name}`"))
}

fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn docker(args: &[&str]) -> std::process::Output {
    output_bounded(Command::new("docker").args(args))
}

struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    }
}

const ORPHANS_SCRIPT: &str = "\
(sleep 0.1 &); (sleep 0.1 &)
sleep 1
for f in /proc/[0-9]*/stat; do read l < $f && echo \"$l\"; done
exit 3";

#[test]
fn static_binary_runs_with_only_busybox() {
    let bin = static_binary();
    let root = busybox_root(bin);

    // An empty environment in a root with nothing but busybox.
    let out = output_bounded(
        Command::new(find_program("chroot"))
            .env_clear()
            .arg(&root)
            .args([
                "/cairn-entrypoint",
                "sh",
                "-c",
                "echo in the root; ls /; exit 6",
            ]),
    );
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("in the root\n"), "{stdout}");
    assert!(
        !stdout.contains("lib"),
        "no libraries in the root: {stdout}"
    );

    let _cleanup = RemoveOnDrop(vec![root.clone(), root.with_extension("tar")]);
    if !docker_available() {
        eprintln!("!! docker is not available: the image part of this test did not run");
        return;
    }
    // `docker import` of that root: an image with only busybox in it.
    let tarball = root.with_extension("tar");
    let tar = output_bounded(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    );
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let import = output_bounded(
        Command::new("docker")
            .arg("import")
            .arg(&tarball)
            .arg(IMAGE),
    );
    assert!(
        import.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&import.stderr)
    );

    // PID 1 in the container: reaps orphans, keeps the child's status.
    let out = docker(&[
        "run",
        "--rm",
        IMAGE,
        "/cairn-entrypoint",
        "/bin/sh",
        "-c",
        ORPHANS_SCRIPT,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("1 (cairn-entrypoi")),
        "{stdout}"
    );
    let zombies: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");

    // `docker stop` sends SIGTERM to PID 1: the child's trap runs, status 0.
    let name = format!("cairn-entrypoint-test-{}", std::process::id());
    let run = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        IMAGE,
        "/cairn-entrypoint",
        "/bin/sh",
        "-c",
        "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eventually("the container's child is ready", || {
        String::from_utf8_lossy(&docker(&["logs", &name]).stdout).contains("ready")
    });
    let stop = docker(&["stop", "-t", "15", &name]);
    let exit = docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    let logs = docker(&["logs", &name]);
    let _ = docker(&["rm", "-f", &name]);
    let _ = docker(&["rmi", IMAGE]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&exit.stdout).trim(), "0");
    assert!(String::from_utf8_lossy(&logs.stdout).contains("got-term"));
}
