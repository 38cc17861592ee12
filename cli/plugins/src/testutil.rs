//! Test fixtures shared by the plugin tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{OpContext, OutputSink, Stream};

/// Collects output lines.
#[derive(Debug, Default)]
pub struct Lines(pub Vec<(Stream, String)>);

impl OutputSink for Lines {
    fn line(&mut self, stream: Stream, text: &str) {
        self.0.push((stream, text.to_string()));
    }
}

impl Lines {
    pub fn text(&self, stream: Stream) -> Vec<String> {
        self.0
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// A context for app "web" in `source`, keeping data in `data`.
pub fn ctx<'a>(source: &Path, data: &Path, sequence: u64, out: &'a mut Lines) -> OpContext<'a> {
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
        out,
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
