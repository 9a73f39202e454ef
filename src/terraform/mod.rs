//! The only place that spawns terraform (or OpenTofu): binary discovery and
//! the minimum-version check, argv and environment building, live streaming
//! of its output with optional capture, exact exit codes, and signals.
//!
//! [`Terraform::discover`] checks the binary once; [`Terraform::command`]
//! builds one invocation and [`Invocation::run`] executes it with stderr (and by
//! default stdout) passed through live. [`rundir`] materializes the
//! private state, data dir and backend override one run needs; [`plan`] holds
//! the `show -json` plan types; [`stream`] takes out of terraform's output
//! what only running it with `-target` on the user's behalf makes it print. This module must not talk to PostgreSQL or
//! decide what to plan: callers choose the arguments.
//!
//! Signals: terraform runs in stategraph's own process group, so it can read
//! the terminal (approval prompts) and a terminal Ctrl-C reaches it directly,
//! exactly once, from the tty driver. While it runs, SIGINT/SIGTERM sent to
//! stategraph are caught and forwarded to terraform unless the terminal
//! already delivered them (SIGINT while our group is the terminal's
//! foreground group); stategraph then waits for terraform to exit. A second
//! interrupt prints a warning that a forced stop may lose state, then is
//! forwarded likewise. Once a run has started, SIGINT and SIGTERM no longer
//! terminate stategraph by default (tokio keeps its handlers installed).

/// Resolves at the first SIGINT or SIGTERM stategraph receives from now on,
/// for a wait with no terraform running (for locks, say) to give up on.
/// From then on, as while terraform runs, those signals no longer
/// terminate stategraph by default.
pub async fn interrupted() {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

pub mod config;
pub mod fingerprint;
pub mod plan;
pub mod planfile;
pub mod providers;
pub mod rundir;
pub mod stream;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::ui::Ui;

pub use plan::Plan;
pub use rundir::RunDir;
pub use stream::Rewrite;

/// The oldest terraform we drive (plan JSON 1.x, `-lockfile=readonly`, `terraform_data`).
pub const MIN_VERSION: Version = Version {
    major: 1,
    minor: 5,
    patch: 0,
};

/// What went wrong running terraform.
#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    #[error(
        "no terraform binary found: install terraform >= {MIN_VERSION} (or OpenTofu), \
         put it on PATH, or set STATEGRAPH_TERRAFORM to its path"
    )]
    NotConfigured,
    #[error(
        "the terraform binary {} does not exist\n\n\
         Set STATEGRAPH_TERRAFORM to the path of terraform >= {MIN_VERSION} (or OpenTofu), \
         or unset it to use terraform on PATH",
        bin.display()
    )]
    Missing { bin: PathBuf },
    #[error(
        "cannot run {}: {source}\n\nInstall terraform >= {MIN_VERSION} (or OpenTofu), \
         or set STATEGRAPH_TERRAFORM to the path of its binary",
        bin.display()
    )]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot tell the version of {}: `version -json` printed {output:?}", bin.display())]
    UnknownVersion { bin: PathBuf, output: String },
    #[error(
        "{} is version {found}, and stategraph needs terraform >= {MIN_VERSION}\n\n\
         Upgrade terraform (or OpenTofu), or set STATEGRAPH_TERRAFORM to a newer binary",
        bin.display()
    )]
    TooOld { bin: PathBuf, found: String },
    #[error("`terraform {command}` failed with exit code {code}")]
    Failed { command: String, code: u8 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("the state terraform wrote to {} is not usable: {source}", path.display())]
    State {
        path: PathBuf,
        source: crate::tfstate::StateError,
    },
}

impl TerraformError {
    /// Terraform's own exit code when it ran and failed (to pass through).
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            TerraformError::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Writes `path` whole or not at all (a temporary file renamed over it),
/// readable by its owner only, in a directory made 0700 if missing: the
/// caches stategraph keeps in its data dir.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TerraformError {
    let what = what.into();
    move |source| TerraformError::Io { what, source }
}

/// A terraform release version (pre-release suffixes are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// Parses `1.11.4`, `v1.6.0-beta1`, `1.5`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().unwrap_or("0").parse().ok()?;
        let patch = parts.next().unwrap_or("0").parse().ok()?;
        Some(Version {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A checked terraform (or OpenTofu) binary.
#[derive(Debug, Clone)]
pub struct Terraform {
    bin: PathBuf,
    version: Version,
    version_text: String,
    opentofu: bool,
    ui: Ui,
    env: Vec<(OsString, Option<OsString>)>,
}

impl Terraform {
    /// Runs `<bin> version -json` and refuses a missing binary or one older
    /// than [`MIN_VERSION`]. No command of this terraform sees the variables
    /// named in `hidden` (stategraph's database URL and the libpq variables
    /// it connected with, see `DatabaseTarget::hidden_env`: none of
    /// terraform's or its providers' business, and they may hold a password).
    pub fn discover(bin: Option<&Path>, hidden: &[String]) -> Result<Terraform, TerraformError> {
        let bin = bin.ok_or(TerraformError::NotConfigured)?.to_path_buf();
        // Only STATEGRAPH_TERRAFORM can name a path that is not there: PATH
        // lookups return files that exist.
        if std::fs::symlink_metadata(&bin).is_err() && bin.components().count() > 1 {
            return Err(TerraformError::Missing { bin });
        }
        let mut version = std::process::Command::new(&bin);
        for k in hidden {
            version.env_remove(k);
        }
        // The user's extra arguments are for their commands, not this one
        // (`TF_CLI_ARGS=-var=...` would make `version` fail).
        version
            .env_remove("TF_CLI_ARGS")
            .env_remove("TF_CLI_ARGS_version");
        let out = version
            .args(["version", "-json"])
            // `version` otherwise asks checkpoint.hashicorp.com whether it is outdated.
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TerraformError::Spawn {
                bin: bin.clone(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let version_text =
            version_from_output(&stdout).ok_or_else(|| TerraformError::UnknownVersion {
                bin: bin.clone(),
                output: format!("{}{}", stdout, String::from_utf8_lossy(&out.stderr)),
            })?;
        let version =
            Version::parse(&version_text).ok_or_else(|| TerraformError::UnknownVersion {
                bin: bin.clone(),
                output: stdout.to_string(),
            })?;
        if version < MIN_VERSION {
            return Err(TerraformError::TooOld {
                bin,
                found: version_text,
            });
        }
        let name = bin.file_name().map(OsStr::to_string_lossy);
        let opentofu = name.is_some_and(|n| n.contains("tofu")) || stdout.contains("OpenTofu");
        Ok(Terraform {
            bin,
            version,
            version_text,
            opentofu,
            ui: Ui::plain(),
            env: hidden.iter().map(|k| (OsString::from(k), None)).collect(),
        })
    }

    /// Uses `ui` for the warnings this module prints (second interrupt).
    pub fn with_ui(mut self, ui: Ui) -> Terraform {
        self.ui = ui;
        self
    }

    /// Sets an environment variable for every command of this terraform.
    pub fn with_env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Terraform {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable from every command of this terraform.
    pub fn without_env(mut self, key: impl AsRef<OsStr>) -> Terraform {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Where this module's own messages go.
    pub fn ui(&self) -> Ui {
        self.ui
    }

    /// The binary's path as given.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The version `version -json` reported.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The version exactly as reported (e.g. `1.6.0-beta1`).
    pub fn version_text(&self) -> &str {
        &self.version_text
    }

    /// Whether the binary is OpenTofu (by name `tofu` or its version banner).
    pub fn is_opentofu(&self) -> bool {
        self.opentofu
    }

    /// A terraform invocation run in `dir` (the root module), not yet started.
    pub fn command(&self, dir: &Path) -> Invocation {
        Invocation {
            bin: self.bin.clone(),
            dir: dir.to_path_buf(),
            args: Vec::new(),
            env: self.env.clone(),
            interactive: false,
            stdout: Output::Inherit,
            quiet: false,
            ui: self.ui,
            stop: None,
            rewrite: None,
            count: None,
            sharing: None,
        }
    }
}

/// `{"terraform_version":"1.11.4",...}` (terraform and OpenTofu), or the
/// first line `Terraform v1.2.3` of versions without `-json`.
fn version_from_output(stdout: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(stdout) {
        return v["terraform_version"].as_str().map(str::to_owned);
    }
    let first = stdout.lines().next()?;
    let v = first.split_whitespace().find(|w| w.starts_with('v'))?;
    Some(v.trim_start_matches('v').to_owned())
}

/// Where terraform's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Straight to our stdout (the default).
    Inherit,
    /// Captured only (e.g. `show -json`, which the user need not see).
    Capture,
    /// Shown live on our stdout and captured.
    Tee,
}

/// One terraform invocation being built.
#[derive(Debug)]
pub struct Invocation {
    bin: PathBuf,
    dir: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    interactive: bool,
    stdout: Output,
    /// stderr captured, never shown (see [`Invocation::quiet`]).
    quiet: bool,
    ui: Ui,
    /// Turns true when terraform must stop (see [`Invocation::stop_on`]).
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// How stdout is rewritten (see [`Invocation::rewrite`]).
    rewrite: Option<Rewrite>,
    /// Lines of stdout counted as they arrive (see [`Invocation::count_lines`]).
    count: Option<(&'static str, std::sync::Arc<std::sync::atomic::AtomicUsize>)>,
    /// Providers served by one process each, for a plan (see [`providers`]).
    sharing: Option<std::sync::Arc<providers::Sharing>>,
}

/// How a finished terraform run ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Terraform's exit code; `128 + signal` if a signal killed it.
    pub code: u8,
    /// Captured stdout (empty with [`Output::Inherit`]).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty unless [`Invocation::quiet`]).
    pub stderr: Vec<u8>,
    /// How many interrupts (SIGINT/SIGTERM) stategraph received while it ran.
    pub interrupts: u32,
}

impl Finished {
    /// Whether terraform exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl Invocation {
    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Invocation {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs terraform in `dir` instead.
    pub fn current_dir(mut self, dir: PathBuf) -> Invocation {
        self.dir = dir;
        self
    }

    /// Sets an environment variable for terraform.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Invocation {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable (e.g. a `TF_CLI_ARGS_plan` colliding with our flags).
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Invocation {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Inherit stdin (approval prompts, `-input=true`); otherwise stdin is `/dev/null`.
    pub fn interactive(mut self, yes: bool) -> Invocation {
        self.interactive = yes;
        self
    }

    /// Where stdout goes (default [`Output::Inherit`]).
    pub fn stdout(mut self, output: Output) -> Invocation {
        self.stdout = output;
        self
    }

    /// Captures stderr instead of showing it: for a run whose failure
    /// stategraph handles itself.
    pub fn quiet(mut self) -> Invocation {
        self.quiet = true;
        self
    }

    /// A command stategraph runs for itself (`show -json`, `state pull`):
    /// the user's `TF_CLI_ARGS` and `TF_CLI_ARGS_<command>` are for the
    /// user's own commands and may not even be flags of this one.
    pub fn own(self) -> Invocation {
        let command = self
            .args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.env_remove("TF_CLI_ARGS")
            .env_remove(format!("TF_CLI_ARGS_{command}"))
    }

    /// Sends terraform its graceful stop (SIGINT, once) when `stop` turns
    /// true: the run lost the lease of its locks, and another run may take
    /// them soon.
    pub fn stop_on(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Invocation {
        self.stop = Some(stop);
        self
    }

    /// Rewrites terraform's stdout on its way to the user and into the
    /// capture, as [`stream`] says: for the commands stategraph runs on the
    /// user's behalf (the plan and apply of the cone).
    pub fn rewrite(mut self, rewrite: Rewrite) -> Invocation {
        self.rewrite = Some(rewrite);
        self
    }

    /// A command whose output is the user's (the plan of the cone):
    /// `TF_IN_AUTOMATION` as the user set it, or not, instead of the run
    /// dir's, so that terraform's hints (the "Saved the plan to" block) are
    /// printed as terraform would print them for the user.
    pub fn user_facing(mut self) -> Invocation {
        self.env.retain(|(k, _)| k != "TF_IN_AUTOMATION");
        self
    }

    /// Counts the lines of stdout holding `marker` into `counter` as they
    /// arrive (terraform's `-json` messages of one type, for a progress
    /// display while it runs).
    pub fn count_lines(
        mut self,
        marker: &'static str,
        counter: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> Invocation {
        self.count = Some((marker, counter));
        self
    }

    /// Serves the providers `sharing` names from one process each when this
    /// command is a plan that configures each once (see [`providers`]).
    pub fn share_providers(
        mut self,
        sharing: Option<std::sync::Arc<providers::Sharing>>,
    ) -> Invocation {
        self.sharing = sharing;
        self
    }

    /// `init -input=false ...`, for messages.
    pub fn describe(&self) -> String {
        self.args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs terraform to the end and returns its exit code, whatever it is.
    ///
    /// Errors only when terraform could not be started or its output not
    /// read. Interrupts received meanwhile are forwarded (see the module docs).
    pub async fn run(self) -> Result<Finished, TerraformError> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(if self.interactive {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stdout(match (self.stdout, &self.rewrite) {
                (Output::Inherit, None) => Stdio::inherit(),
                _ => Stdio::piped(),
            })
            .stderr(if self.quiet {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            // Dropping the future must not kill terraform mid-write.
            .kill_on_drop(false);
        // If stategraph itself dies (kill -9, OOM), terraform must not run on
        // unsupervised: the kernel sends it SIGINT, terraform's graceful stop.
        // (Sent when the spawning thread exits; tokio's worker threads live
        // as long as the runtime.)
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGINT)
                    .map_err(std::io::Error::from)
            });
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let served = match &self.sharing {
            Some(s) if providers::configures_once(&self.args, &self.env) => {
                Some(s.serve(&self.dir, &self.env).await)
            }
            _ => None,
        };
        if let Some((reattach, what)) = served.as_ref().and_then(|s| s.reattach()) {
            cmd.env("TF_REATTACH_PROVIDERS", reattach);
            if !self.quiet {
                self.ui
                    .step("Starting terraform's providers once for its plan")
                    .done(what);
            }
        }
        // Install the handlers before spawning: no window where a signal kills us alone.
        let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("cannot handle SIGINT"))?;
        let mut sigterm =
            signal(SignalKind::terminate()).map_err(io_err("cannot handle SIGTERM"))?;

        let mut child = cmd.spawn().map_err(|source| TerraformError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        let pid = child.id().map(|id| Pid::from_raw(id as i32));
        let mut show = self.stdout != Output::Capture;
        let capture = self.stdout != Output::Inherit;
        let mut filter = self.rewrite.clone().map(stream::Filter::new);
        let ui = self.ui;
        let count = self.count.clone();
        let reader = child.stdout.take().map(|mut out| {
            tokio::spawn(async move {
                let mut captured = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                // The line being counted, up to its newline.
                let mut line: Vec<u8> = Vec::new();
                loop {
                    let n = out.read(&mut buf).await?;
                    let bytes = match (&mut filter, n) {
                        (Some(f), 0) => f.finish(),
                        (Some(f), n) => f.push(&buf[..n]),
                        (None, n) => buf[..n].to_vec(),
                    };
                    if let Some((marker, counter)) = &count {
                        for &b in &bytes {
                            if b != b'\n' {
                                line.push(b);
                                continue;
                            }
                            let text = String::from_utf8_lossy(&line);
                            if text.contains(marker) {
                                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            line.clear();
                        }
                    }
                    if capture {
                        captured.extend_from_slice(&bytes);
                    }
                    if show && !bytes.is_empty() {
                        // Blocking write (tokio's io-std is not enabled): terraform
                        // output is small, and a full stdout pipe must slow it anyway.
                        // A reader gone (`| head`) must not stop terraform
                        // mid-apply: its output is read to the end, unseen.
                        show = ui.terraform_output(&bytes).is_ok();
                    }
                    if n == 0 {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(captured)
            })
        });

        let errors = child.stderr.take().map(|mut err| {
            tokio::spawn(async move {
                let mut captured = Vec::new();
                err.read_to_end(&mut captured).await?;
                Ok::<_, std::io::Error>(captured)
            })
        });

        let mut interrupts = 0u32;
        let mut stop = self.stop.clone();
        let status = loop {
            let sig = tokio::select! {
                status = child.wait() => break status.map_err(io_err("waiting for terraform"))?,
                _ = sigint.recv() => Signal::SIGINT,
                _ = sigterm.recv() => Signal::SIGTERM,
                Some(()) = must_stop(&mut stop) => {
                    stop = None;
                    self.ui.warn(
                        "the lease of this run's locks could not be renewed in time (the \
                         database is unreachable from here): stopping terraform now, before the \
                         lease runs out and another run may take these resources. What \
                         terraform finishes is recorded when the database is reachable, or kept \
                         in a recovery file.",
                    );
                    if let Some(pid) = pid {
                        let _ = kill(pid, Signal::SIGINT);
                    }
                    continue;
                }
            };
            interrupts += 1;
            if interrupts >= 2 {
                self.ui.warn(
                    "Second interrupt: passing it on, and terraform stops at once without \
                     waiting for the operations in progress. Resources being created or changed \
                     right now may exist without being recorded in the state (terraform calls \
                     this possible data loss). stategraph still records what terraform wrote and \
                     frees the locks; afterwards, check those resources with `stategraph plan`.",
                );
            }
            let from_terminal = sig == Signal::SIGINT && in_terminal_foreground();
            if let (Some(pid), false) = (pid, from_terminal) {
                // The child may have just exited: nothing to do then.
                let _ = kill(pid, sig);
            }
        };

        let stdout = match reader {
            Some(task) => task
                .await
                .map_err(|e| TerraformError::Io {
                    what: "reading terraform's output".into(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io_err("reading terraform's output"))?,
            None => Vec::new(),
        };
        let stderr = match errors {
            Some(task) => task.await.ok().and_then(Result::ok).unwrap_or_default(),
            None => Vec::new(),
        };
        if let Some(served) = served {
            served.stop(self.ui).await;
        }
        Ok(Finished {
            code: exit_code(status),
            stdout,
            stderr,
            interrupts,
        })
    }

    /// Like [`Invocation::run`], and a non-zero exit is [`TerraformError::Failed`].
    pub async fn run_ok(self) -> Result<Finished, TerraformError> {
        let command = self.describe();
        let done = self.run().await?;
        if done.success() {
            Ok(done)
        } else {
            Err(TerraformError::Failed {
                command,
                code: done.code,
            })
        }
    }
}

/// Resolves once `stop` is true; never without one.
async fn must_stop(stop: &mut Option<tokio::sync::watch::Receiver<bool>>) -> Option<()> {
    match stop {
        Some(rx) => rx.wait_for(|s| *s).await.ok().map(|_| ()),
        None => std::future::pending().await,
    }
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Whether our process group is the foreground group of our controlling
/// terminal: then a terminal-generated SIGINT went to terraform (same group)
/// as well, and forwarding it would make a second, forcing, interrupt.
///
/// Read from `/proc/self/stat` (pgrp and tpgid); without `/proc` we assume no
/// terminal and forward.
fn in_terminal_foreground() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // Fields after the `(comm)`, which may itself hold spaces and parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state ppid pgrp session tty_nr tpgid
    let (Some(pgrp), Some(tty), Some(tpgid)) = (fields.get(2), fields.get(4), fields.get(5)) else {
        return false;
    };
    *tty != "0" && tpgid == pgrp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            Version::parse("1.11.4"),
            Some(Version {
                major: 1,
                minor: 11,
                patch: 4
            })
        );
        assert_eq!(Version::parse("v1.6.0-beta1").unwrap().to_string(), "1.6.0");
        assert!(Version::parse("1.4.7").unwrap() < MIN_VERSION);
        assert!(Version::parse("1.10.0").unwrap() > MIN_VERSION);
        assert_eq!(Version::parse("x"), None);
    }

    #[test]
    fn reads_version_output() {
        let json = r#"{"terraform_version":"1.11.4","platform":"linux_amd64","provider_selections":{},"terraform_outdated":false}"#;
        assert_eq!(version_from_output(json).as_deref(), Some("1.11.4"));
        assert_eq!(
            version_from_output("Terraform v0.12.31\n").as_deref(),
            Some("0.12.31")
        );
        assert_eq!(
            version_from_output("OpenTofu v1.8.2\non linux_amd64\n").as_deref(),
            Some("1.8.2")
        );
    }

    #[test]
    fn too_old_names_the_version() {
        let e = TerraformError::TooOld {
            bin: "/usr/bin/terraform".into(),
            found: "1.4.6".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("1.4.6") && msg.contains(">= 1.5.0"), "{msg}");
    }
}
