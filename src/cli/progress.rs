//! Progress of create, pull and push on a terminal: a spinner per status
//! and a byte bar (with sizes and rate) per transfer. Off a terminal, plain
//! status lines instead.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Shows progress: spinners and byte bars on stderr when it is a terminal,
/// plain status lines on stdout otherwise (logs and tests read those).
pub(super) struct Progress {
    /// Stderr is a terminal: bars and spinners instead of lines.
    pub(super) terminal: bool,
    spinner: Option<ProgressBar>,
    bar: Option<(String, ProgressBar)>,
    last: String,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            spinner: None,
            bar: None,
            last: String::new(),
        }
    }

    /// A new status line; the previous one stays on screen, finished.
    pub(super) fn status(&mut self, msg: &str) {
        if msg == self.last {
            return;
        }
        self.last = msg.to_string();
        self.close();
        if self.terminal {
            let s = ProgressBar::new_spinner().with_message(msg.to_string());
            s.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some(s);
        } else {
            // A closed stdout must not stop a create the server is already running.
            let _ = super::out(&format!("{msg}\n"));
        }
    }

    /// A byte counter for reading or sending `total` bytes; hidden when not
    /// on a terminal, where the status line alone is printed.
    pub(super) fn bytes(&mut self, msg: &str, total: u64) -> ProgressBar {
        self.close();
        if !self.terminal {
            if !msg.starts_with("hashing") {
                let _ = super::out(&format!("{msg}\n"));
            }
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total).with_message(msg.to_string());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {percent:>3}% ▕{bar:25}▏ {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style);
        }
        bar
    }

    /// One line of the create stream: a status, or progress of one.
    pub(super) fn line(&mut self, line: &Value) {
        let status = line["status"].as_str().unwrap_or_default();
        match (line["total"].as_u64(), self.terminal) {
            (Some(total), true) => {
                let completed = line["completed"].as_u64().unwrap_or(0);
                let same = self.bar.as_ref().is_some_and(|(s, _)| s == status);
                if !same {
                    let bar = self.bytes(status, total);
                    self.bar = Some((status.to_string(), bar));
                    self.last = status.to_string();
                }
                if let Some((_, bar)) = &self.bar {
                    bar.set_position(completed);
                }
            }
            _ => self.status(status),
        }
    }

    fn close(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish();
        }
        if let Some((_, b)) = self.bar.take() {
            b.finish();
        }
    }

    pub(super) fn finish(&mut self) {
        self.close();
    }
}
