//! The library's child API against real processes: `stop_gracefully`,
//! signalling after the end, exit statuses through the reaper.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_entrypoint::child::{Child, ChildSpec};
use cairn_entrypoint::signals::Target;
use cairn_entrypoint::{reaper, ExitStatus};
use common::{assert_eventually, read, temp_dir, DEADLINE};
use nix::sys::signal::Signal;

fn sh(script: &str) -> Child {
    Child::spawn(&ChildSpec::new("sh", ["-c", script]), None).expect("spawn")
}

fn wait_for_file(path: &Path) {
    assert_eventually(&format!("{} exists", path.display()), || path.exists());
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {DEADLINE:?}"))
}

#[tokio::test]
async fn stop_gracefully_ends_a_child_that_stops_on_term() {
    reaper::start().expect("reaper");
    let dir = temp_dir("graceful-term");
    let ready = dir.join("ready");
    let child = sh(&format!(
        "trap 'exit 0' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    ));
    let handle = child.handle();
    wait_for_file(&ready);
    let start = Instant::now();
    let status = bounded("stop", handle.stop_gracefully(Duration::from_secs(30))).await;
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "did not wait out the grace: {:?}",
        start.elapsed()
    );
    assert_eq!(handle.status(), Some(status));
}

#[tokio::test]
async fn stop_gracefully_kills_a_child_that_ignores_term() {
    reaper::start().expect("reaper");
    let dir = temp_dir("graceful-kill");
    let ready = dir.join("ready");
    // An ignored signal stays ignored across exec: `sleep` ignores TERM too.
    let child = sh(&format!(
        "trap '' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    ));
    let handle = child.handle();
    wait_for_file(&ready);
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let status = bounded("stop", handle.stop_gracefully(grace)).await;
    assert_eq!(status, ExitStatus::Signaled(Signal::SIGKILL as i32));
    assert!(
        start.elapsed() >= grace,
        "killed before the grace ran out: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn stop_gracefully_kills_leftovers_of_the_group() {
    reaper::start().expect("reaper");
    let dir = temp_dir("graceful-group");
    let gc_pid = dir.join("gc-pid");
    // The child stops on TERM at once; its background helper (same process
    // group) ignores TERM and would be left behind. The child's trap is set
    // before the file that tells the test to stop it is written (else TERM
    // could come first and kill it by signal).
    let child = sh(&format!(
        "trap 'exit 0' TERM; (trap '' TERM; while :; do sleep 0.05; done) & \
         echo $! > {f}.tmp; mv {f}.tmp {f}; while :; do sleep 0.05; done",
        f = gc_pid.display()
    ));
    let handle = child.handle();
    wait_for_file(&gc_pid);
    let gc: i32 = read(&gc_pid).trim().parse().expect("pid");
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let status = bounded("stop", handle.stop_gracefully(grace)).await;
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(
        start.elapsed() >= grace,
        "the helper was given the grace period too"
    );
    // Gone, or a zombie waiting for its new parent to reap it.
    assert_eventually("the helper is dead", || {
        std::fs::read_to_string(format!("/proc/{gc}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    });
}

#[tokio::test]
async fn a_reaped_child_is_not_signalled() {
    reaper::start().expect("reaper");
    let child = sh("exit 3");
    let handle = child.handle();
    let status = bounded("wait", child.wait_with_output(Duration::from_secs(1))).await;
    assert_eq!(status, ExitStatus::Exited(3));
    assert!(!handle.signal(Signal::SIGTERM, Target::Child));
    assert!(!handle.signal(Signal::SIGTERM, Target::Group));
    assert!(!handle.forward(Signal::SIGTERM));
    // Waiting again answers at once.
    assert_eq!(
        bounded("wait again", handle.wait()).await,
        ExitStatus::Exited(3)
    );
}

#[tokio::test]
async fn forwarding_follows_the_table() {
    reaper::start().expect("reaper");
    let dir = temp_dir("forward");
    let ready = dir.join("ready");
    let child = sh(&format!(
        "trap 'exit 10' USR1; touch {}; while :; do sleep 0.05; done",
        ready.display()
    ));
    let handle = child.handle();
    wait_for_file(&ready);
    assert!(
        !handle.forward(Signal::SIGKILL),
        "SIGKILL is not a forwarded signal"
    );
    assert!(handle.forward(Signal::SIGUSR1));
    assert_eq!(bounded("wait", handle.wait()).await, ExitStatus::Exited(10));
}

#[tokio::test]
async fn many_children_each_get_their_own_status() {
    reaper::start().expect("reaper");
    let children: Vec<Child> = (0..20).map(|i| sh(&format!("exit {i}"))).collect();
    for (i, child) in children.into_iter().enumerate() {
        let status = bounded("wait", child.wait_with_output(Duration::from_secs(1))).await;
        assert_eq!(status, ExitStatus::Exited(i as i32));
    }
}
