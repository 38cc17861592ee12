//! Locations and errors of the config loader.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A position in a config file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize, column: usize) -> Location {
        Location {
            file: file.into(),
            line,
            column,
        }
    }

    /// The start of `file` (1:1), used for errors about the file as a whole.
    pub fn start_of(file: &Path) -> Location {
        Location::new(file, 1, 1)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Everything that can go wrong while finding, reading, parsing and evaluating a config.
///
/// `Display` is a single line (one per error for [`ConfigError::Many`]); it starts with
/// `FILE:LINE:COL: ` whenever a location is known, or `FILE: ` when only the file is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No config file in a directory.
    #[error("no config file in {}: looked for {}", dir.display(), tried.join(", "))]
    NotFound {
        dir: PathBuf,
        tried: Vec<&'static str>,
    },
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed HCL or JSON.
    #[error("{location}: syntax error: {message}")]
    Syntax { location: Location, message: String },
    /// Well-formed, but not a valid Cairn config (unknown block, missing stage, bad hook…).
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    /// An expression failed to evaluate (unknown function, undefined variable, git failed…).
    #[error("{location}: cannot evaluate `{attribute}`: {message}")]
    Eval {
        location: Location,
        attribute: String,
        message: String,
    },
    /// A `dynamic()`/`configdynamic()` source that cannot be read from here (vault without
    /// an address, a source Cairn has no reader for…).
    #[error("{location}: `{attribute}` reads config source \"{source_name}\", which cannot be reached: {message}")]
    Unreachable {
        location: Location,
        attribute: String,
        source_name: String,
        message: String,
    },
    /// An input variable with no value from any source.
    #[error("{location}: {message}")]
    NoValue {
        location: Location,
        variable: String,
        message: String,
    },
    /// Several errors of one file, in the order found; `Display` puts one on each line.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
    /// `Config::app(None)` on a config with several apps.
    #[error("{}: several apps are defined ({}); name the one to use", file.display(), available.join(", "))]
    AppRequired {
        file: PathBuf,
        available: Vec<String>,
    },
    /// `Config::app(Some(name))` with a name the config does not define.
    #[error("{}: no app named \"{name}\"; defined: {}", file.display(), available.join(", "))]
    NoSuchApp {
        file: PathBuf,
        name: String,
        available: Vec<String>,
    },
}

impl ConfigError {
    /// Where the error is, when a line and column are known.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { location, .. }
            | ConfigError::Invalid { location, .. }
            | ConfigError::NoValue { location, .. }
            | ConfigError::Eval { location, .. }
            | ConfigError::Unreachable { location, .. } => Some(location),
            ConfigError::Many(errs) => errs.first().and_then(|e| e.location()),
            _ => None,
        }
    }

    /// One error, or [`ConfigError::Many`] for several (nested lists are flattened).
    pub(crate) fn many(errs: Vec<ConfigError>) -> ConfigError {
        let mut flat: Vec<ConfigError> = Vec::new();
        for e in errs {
            match e {
                ConfigError::Many(inner) => flat.extend(inner),
                e => flat.push(e),
            }
        }
        if flat.len() == 1 {
            flat.pop().expect("one error")
        } else {
            ConfigError::Many(flat)
        }
    }

    /// The errors this one holds: itself, or each of [`ConfigError::Many`].
    pub fn each(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(errs) => errs.iter().collect(),
            e => vec![e],
        }
    }

    /// The variables without a value, when that is all that is wrong (a value stored on the
    /// cluster may be all the file needs).
    pub fn only_missing_values(&self) -> Option<Vec<&str>> {
        self.each()
            .into_iter()
            .map(|e| match e {
                ConfigError::NoValue { variable, .. } => Some(variable.as_str()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn invalid(location: &Location, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location: location.clone(),
            message: one_line(&message.into()),
        }
    }

    pub(crate) fn syntax(location: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::Syntax {
            location,
            message: one_line(&message.into()),
        }
    }
}

/// Collapses a possibly multi-line message into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
