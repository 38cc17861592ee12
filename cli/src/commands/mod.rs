//! One module per CLI command group.

pub mod cluster;
pub mod config;
pub mod context;
pub mod instance;
pub mod job;
pub mod lifecycle;
pub mod list;
pub mod runner;
pub mod server;
pub mod status;

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Use this context instead of the current one (also: CAIRN_CONTEXT).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The directory holding cairn.hcl (default: the current directory).
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Global {
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Load the config in `dir` (cairn.hcl, cairn.hcl.json, waypoint.hcl…).
pub fn load_config(dir: &Path) -> anyhow::Result<Config> {
    let path = crate::config::find(dir)?;
    Ok(crate::config::load(&path)?)
}

/// Parse "v3" or "3".
pub fn parse_seq(s: &str) -> Result<u64, String> {
    let t = s.strip_prefix('v').unwrap_or(s);
    t.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a sequence number (use 3 or v3)"))
}

/// Format milliseconds since the epoch as UTC "YYYY-MM-DD HH:MM:SS".
pub fn when(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).unwrap_or_else(|_| ms.to_string())
}

/// Print rows as aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}
