//! Terminal rendering of job events: a spinner per running step (on a TTY),
//! ✓ or ✗ when it ends, output lines under their step, and the URLs last.
//! Plain lines when stdout is not a terminal; no colour with `NO_COLOR`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use cairn_protocol::api::{JobEvent, StepStatus};
use cairn_protocol::types::{JobState, Stream};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Style {
    pub tty: bool,
    pub color: bool,
}

impl Style {
    pub fn detect() -> Style {
        let tty = std::io::stdout().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Style { tty, color }
    }

    pub fn ok(&self) -> &'static str {
        if self.color {
            "\x1b[32m✓\x1b[0m"
        } else {
            "✓"
        }
    }

    pub fn fail(&self) -> &'static str {
        if self.color {
            "\x1b[31m✗\x1b[0m"
        } else {
            "✗"
        }
    }

    pub fn bold(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Renders one job's events.
pub struct Renderer {
    style: Style,
    spinners: HashMap<u32, ProgressBar>,
    results: Vec<(String, String)>,
    pub finished: Option<(JobState, Option<String>)>,
}

impl Renderer {
    pub fn new(style: Style) -> Renderer {
        Renderer {
            style,
            spinners: HashMap::new(),
            results: Vec::new(),
            finished: None,
        }
    }

    fn println(&self, line: &str) {
        match self.spinners.values().next() {
            Some(pb) => pb.println(line),
            None => println!("{line}"),
        }
    }

    pub fn handle(&mut self, ev: &JobEvent) {
        match ev {
            JobEvent::State {
                state: JobState::Queued,
                ..
            } => {
                if !self.style.tty {
                    println!("Job queued");
                }
            }
            JobEvent::State { .. } => {}
            JobEvent::Step {
                step,
                name,
                status,
                detail,
            } => match status {
                StepStatus::Started => {
                    if self.style.tty {
                        let pb = ProgressBar::new_spinner();
                        pb.set_style(
                            ProgressStyle::with_template("{spinner} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        pb.set_message(name.clone());
                        pb.enable_steady_tick(Duration::from_millis(100));
                        self.spinners.insert(*step, pb);
                    } else {
                        println!("» {name}");
                    }
                }
                StepStatus::Succeeded | StepStatus::Skipped => {
                    let mark = self.style.ok();
                    let line = format!("{mark} {name}");
                    self.end_step(*step, &line);
                }
                StepStatus::Failed => {
                    let mark = self.style.fail();
                    let line = match detail {
                        Some(d) => format!("{mark} {name}: {d}"),
                        None => format!("{mark} {name}"),
                    };
                    self.end_step(*step, &line);
                }
            },
            JobEvent::Output { stream, line, .. } => {
                let prefix = match stream {
                    Stream::Stderr => "  ! ",
                    _ => "  │ ",
                };
                self.println(&format!("{prefix}{line}"));
            }
            JobEvent::Operation { .. } => {}
            JobEvent::Result { key, value } => self.results.push((key.clone(), value.clone())),
            JobEvent::Finished { state, error } => {
                for (_, pb) in self.spinners.drain() {
                    pb.finish_and_clear();
                }
                self.finished = Some((*state, error.clone()));
            }
        }
    }

    fn end_step(&mut self, step: u32, line: &str) {
        match self.spinners.remove(&step) {
            Some(pb) => {
                pb.finish_and_clear();
                self.println(line);
            }
            None => self.println(line),
        }
    }

    /// Print the URLs and other results, release URL first.
    pub fn print_results(&self) {
        if self.results.is_empty() {
            return;
        }
        println!();
        let mut sorted = self.results.clone();
        sorted.sort_by_key(|(k, _)| match k.as_str() {
            "Release URL" => 0,
            "Deployment URL" => 1,
            _ => 2,
        });
        for (k, v) in sorted {
            println!("{} {v}", self.style.bold(&format!("{k}:")));
        }
    }
}
