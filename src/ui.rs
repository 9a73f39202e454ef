//! Everything stategraph itself prints to stderr: messages, warnings and
//! progress. stdout is for data and is written by the commands directly.
//!
//! On a terminal, long work shows a spinner; in CI, with `--no-color`, or when
//! stderr is not a terminal, the same steps print as plain lines so logs read
//! well. Nothing else in the crate writes to stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How we talk to the person (or the CI log) on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    fancy: bool,
}

impl Ui {
    /// Spinners only on an interactive stderr outside CI, and not when asked for plain output.
    pub fn new(no_color: bool) -> Ui {
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        Ui {
            fancy: !no_color && !in_ci && std::io::stderr().is_terminal(),
        }
    }

    /// A Ui that never draws spinners (for tests and scripts).
    pub fn plain() -> Ui {
        Ui { fancy: false }
    }

    /// Whether spinners are drawn (a terminal outside CI).
    pub fn is_fancy(&self) -> bool {
        self.fancy
    }

    /// A line of information.
    pub fn info(&self, msg: impl AsRef<str>) {
        eprintln!("{}", msg.as_ref());
    }

    /// A warning, prefixed like terraform's.
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.fancy {
            eprintln!("\x1b[33mWarning:\x1b[0m {}", msg.as_ref());
        } else {
            eprintln!("Warning: {}", msg.as_ref());
        }
    }

    /// Starts a step such as "Pushing state". Finish it with [`Step::done`].
    pub fn step(&self, msg: impl Into<String>) -> Step {
        let msg = msg.into();
        let bar = if self.fancy {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .expect("static template")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
            );
            bar.set_message(format!("{msg}..."));
            bar.enable_steady_tick(Duration::from_millis(80));
            Some(bar)
        } else {
            None
        };
        Step {
            msg,
            bar,
            started: Instant::now(),
        }
    }
}

/// One step of long work in progress.
pub struct Step {
    msg: String,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Step {
    /// Updates the text shown next to the spinner (terminal only).
    pub fn progress(&self, detail: impl AsRef<str>) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}... {}", self.msg, detail.as_ref()));
        }
    }

    /// Time since the step started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the step with a result, e.g. "done" or "12 of 2,847 instances".
    pub fn done(self, result: impl AsRef<str>) {
        let line = format!("{}... {}", self.msg, result.as_ref());
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{line}");
        let _ = std::io::stderr().flush();
    }

    /// Ends the step without a result line (the caller reports the failure).
    pub fn fail(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}... failed", self.msg);
    }
}

/// `2847` -> `2,847`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for humans: `840 µs`, `12.3 ms`, `4.21 s`.
pub fn duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(2847), "2,847");
        assert_eq!(thousands(100000), "100,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_micros(840)), "840 µs");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(duration(Duration::from_millis(4_210)), "4.21 s");
    }
}
