//! Everything stategraph itself prints, in one place: messages, warnings
//! and progress on stderr; human text, data and the approval prompt on
//! stdout; terraform output a run held back and shows later.
//!
//! On a terminal, long work shows a spinner; in CI, with `--no-color`, or when
//! stderr is not a terminal, the same steps print as plain lines so logs read
//! well. With machine-readable output (`-json`), stdout carries terraform's
//! JSON only: human text goes to stderr. No other module writes to stdout or
//! stderr; terraform's own output reaches them directly (the child inherits
//! them) or through [`Ui::terraform_output`].

use std::io::{BufWriter, IsTerminal, StdoutLock, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How we talk to the person (or the CI log).
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    fancy: bool,
    /// stdout is for machines (`-json`): no human text there.
    machine: bool,
}

impl Ui {
    /// Spinners only on an interactive stderr outside CI, and not when asked
    /// for plain output.
    pub fn new(no_color: bool, ci: bool) -> Ui {
        Ui {
            fancy: !no_color && !ci && std::io::stderr().is_terminal(),
            machine: false,
        }
    }

    /// A Ui that never draws spinners (for tests and scripts).
    pub fn plain() -> Ui {
        Ui {
            fancy: false,
            machine: false,
        }
    }

    /// This Ui for a command whose stdout is machine-readable when `yes`
    /// (terraform's `-json`): [`Ui::say`] then writes to stderr.
    pub fn machine_readable(self, yes: bool) -> Ui {
        Ui {
            machine: yes,
            ..self
        }
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

    /// Human text on stdout, where terraform prints its own ("No changes.",
    /// "Apply cancelled."); on stderr when stdout is machine-readable.
    pub fn say(&self, text: impl AsRef<str>) {
        if self.machine {
            eprintln!("{}", text.as_ref());
        } else {
            println!("{}", text.as_ref());
        }
    }

    /// Data on stdout (a table, JSON, a state), buffered. A reader that
    /// stops early (`| head`) is not an error.
    pub fn data(&self) -> Data {
        Data {
            out: BufWriter::with_capacity(1 << 20, std::io::stdout().lock()),
        }
    }

    /// Asks `question` on stdout, as terraform asks for approval, and
    /// returns the line typed on stdin.
    pub fn ask(&self, question: &str) -> std::io::Result<String> {
        let mut out = std::io::stdout().lock();
        out.write_all(question.as_bytes())?;
        out.flush()?;
        drop(out);
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(answer)
    }

    /// Shows what terraform printed while its output was held back.
    pub fn replay(&self, stdout: &[u8], stderr: &[u8]) {
        let _ = std::io::stdout().lock().write_all(stdout);
        let _ = std::io::stderr().lock().write_all(stderr);
    }

    /// Shows terraform output as it arrives (captured and shown live).
    pub fn terraform_output(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
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

/// An error report (see [`crate::error::report`]), before or after any
/// [`Ui`] exists.
pub fn error(text: &str) {
    eprintln!("{text}");
}

/// Buffered data on stdout (see [`Ui::data`]).
pub struct Data {
    out: BufWriter<StdoutLock<'static>>,
}

impl Write for Data {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
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

    /// Progress of a long step: on a terminal, the text next to the spinner
    /// (call it often); otherwise a plain line of its own (call it every
    /// half minute or so, so that a CI log shows the step is alive).
    pub fn still(&self, detail: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("{}... {}", self.msg, detail.as_ref())),
            None => eprintln!("{}... {}", self.msg, detail.as_ref()),
        }
    }

    /// Whether the step is drawn as a spinner (a terminal).
    pub fn is_live(&self) -> bool {
        self.bar.is_some()
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
