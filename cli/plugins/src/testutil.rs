//! Test fixtures shared by the plugin tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{OpContext, OutputSink, Stream};

/// Collects output lines; clones share them (a context owns one clone).
#[derive(Debug, Default, Clone)]
pub struct Lines(Arc<Mutex<Vec<(Stream, String)>>>);

impl OutputSink for Lines {
    fn line(&mut self, stream: Stream, text: &str) {
        self.all().push((stream, text.to_string()));
    }
}

impl Lines {
    /// Every line so far, with its stream.
    pub fn all(&self) -> std::sync::MutexGuard<'_, Vec<(Stream, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn text(&self, stream: Stream) -> Vec<String> {
        self.all()
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// A context for app "web" in `source`, keeping data in `data`.
pub fn ctx(source: &Path, data: &Path, sequence: u64, out: &Lines) -> OpContext {
    OpContext {
        project: "demo".to_string(),
        app: "web".to_string(),
        workspace: "default".to_string(),
        sequence,
        source_dir: source.to_path_buf(),
        data_dir: data.to_path_buf(),
        self_exe: test_exe(),
        env: BTreeMap::new(),
        entrypoint: None,
        out: Box::new(out.clone()),
    }
}

/// This test binary: it hosts the supervisor (see `process::tests::__supervise_host`).
pub fn test_exe() -> PathBuf {
    std::env::current_exe().expect("the test binary knows its path")
}

pub fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    std::fs::write(path, contents).expect("write file");
}

/// Runs a plugin operation's future to its end from a plain test, on a
/// multi-threaded runtime (the built-ins use `block_in_place`).
pub trait Wait: std::future::Future + Sized {
    fn wait(self) -> Self::Output {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RUNTIME
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a test runtime")
            })
            .block_on(self)
    }
}

impl<F: std::future::Future> Wait for F {}
