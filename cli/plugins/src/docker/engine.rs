//! Reaching the Docker engine, and reading its progress streams.

use std::time::Duration;

use bollard::Docker;

use crate::PluginError;

/// How long one engine request may take (builds and pushes stream for longer:
/// the limit is on each request, and bollard applies it per request).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where the engine is expected: `DOCKER_HOST`, else the default socket.
pub fn engine_address() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => format!("{h} (DOCKER_HOST)"),
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

/// The local Docker engine (`DOCKER_HOST` or the default socket), at the API
/// version both sides speak. The error names where it looked.
pub async fn engine() -> Result<Docker, PluginError> {
    let unreachable = |e: bollard::errors::Error| {
        PluginError::Failed(format!(
            "cannot reach the Docker engine at {}: {e} (is the Docker daemon running? set DOCKER_HOST to reach another one)",
            engine_address()
        ))
    };
    let docker = Docker::connect_with_defaults()
        .map_err(unreachable)?
        .with_timeout(REQUEST_TIMEOUT);
    // A short first question: a missing or dead engine fails here, at once.
    tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| {
            PluginError::Failed(format!(
                "the Docker engine at {} did not answer within 10 s",
                engine_address()
            ))
        })?
        .map_err(unreachable)
}

/// An engine error as one line, with what was being done.
pub fn engine_error(doing: &str, e: bollard::errors::Error) -> PluginError {
    PluginError::Failed(format!("{doing}: {}", describe(&e)))
}

/// The engine's own message where it gave one.
pub fn describe(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error;
    match e {
        Error::DockerResponseServerError { message, .. } => message.trim().to_string(),
        Error::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

/// Whether the engine answered "not found".
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Splits a build stream's chunks into whole lines.
#[derive(Default)]
pub struct LineBuffer {
    partial: String,
}

impl LineBuffer {
    /// The complete lines in `chunk` (and before it), without line endings.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.partial.push_str(chunk);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            lines.push(line);
        }
        lines
    }

    /// What is left after the last newline.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        (!rest.trim().is_empty()).then(|| rest.trim_end().to_string())
    }
}

/// Reports pull/push progress without flooding the output: one line per layer
/// and state ("abc123: Pushed"), never the byte counters.
#[derive(Default)]
pub struct Progress {
    seen: std::collections::HashSet<(String, String)>,
}

impl Progress {
    /// The line to show for a status update, if it is news.
    pub fn line(&mut self, id: Option<&str>, status: Option<&str>) -> Option<String> {
        let status = status?.trim();
        if status.is_empty() {
            return None;
        }
        let id = id.unwrap_or("").trim().to_string();
        // "Pushing"/"Downloading"/"Extracting" repeat with byte counts.
        if matches!(
            status,
            "Pushing" | "Downloading" | "Extracting" | "Waiting" | "Preparing"
        ) {
            return None;
        }
        if !self.seen.insert((id.clone(), status.to_string())) {
            return None;
        }
        Some(if id.is_empty() {
            status.to_string()
        } else {
            format!("{id}: {status}")
        })
    }
}

/// Pulls `image:tag` into the engine, showing progress; the error is the
/// engine's message (callers say what it means for them).
pub async fn pull(
    docker: &bollard::Docker,
    out: &mut dyn crate::OutputSink,
    image: &str,
    tag: &str,
    creds: Option<bollard::auth::DockerCredentials>,
) -> Result<(), String> {
    use futures::StreamExt;
    let mut stream = docker.create_image(
        Some(
            bollard::query_parameters::CreateImageOptionsBuilder::default()
                .from_image(image)
                .tag(tag)
                .build(),
        ),
        None,
        creds,
    );
    let mut progress = Progress::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = progress.line(info.id.as_deref(), info.status.as_deref()) {
                    out.line(crate::Stream::Stdout, &line);
                }
            }
            Err(e) => return Err(describe(&e)),
        }
    }
    Ok(())
}
