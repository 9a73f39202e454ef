//! The engine: the stages of one plan/apply run, a file per stage, and the
//! other paths that write a stored state with the same guarantees.
//!
//! [`pipeline::run`] reads top to bottom like the flow in the README:
//!
//! 0. [`preflight`]: what terraform refuses before planning (no
//!    configuration files, undeclared or malformed `-var`s) is refused.
//! 1. [`session`]: open the store (terraform's version is checked
//!    meanwhile), find the state (refusing one created from another
//!    checkout; a plan of a state not created yet plans from nothing),
//!    rescue the private dirs of runs that died, ready a private run dir.
//! 2. [`discover`]: what may change — the configuration's HCL against the
//!    recorded [`baseline`] where it can tell, else terraform's refresh-less
//!    plan (the tests' oracle runs both).
//! 3. [`change_set`]: the write set (changed instances and everything
//!    downstream) and the read set (what they depend on), on the stored graph.
//! 4. [`lease`]: lock them — exclusive on the write set, shared on the read
//!    set (shared on both for `plan`) — with a lease renewed while held.
//! 5. Re-check under the lock: rows of the cone that changed meanwhile are
//!    planned again; a cone that grew is locked again.
//! 6. [`refresh`]: terraform's plan of the cone, with a scoped refresh of
//!    only the written instances where [`strategy`] estimates that faster.
//! 7. [`verify`]: what terraform planned must lie in the locked write set;
//!    what lies outside is locked too and planned again, never applied
//!    unlocked. [`revert`]: what it plans to change must not undo a change
//!    made from a commit this checkout does not contain.
//! 8. [`record`]: the run's transaction opened before terraform writes,
//!    checkpoints merged while it applies, the final merge retried while
//!    the database is unreachable, a [`recovery`] file when it cannot be
//!    written.
//! 9. The lease is released.
//!
//! Besides the pipeline: [`saved`] plans (`plan -out`, `apply FILE`),
//! [`locked`] terraform commands that may write anywhere in the state
//! (`taint`, `import`, `state mv` ...), [`recovery`] (`recover FILE`) and
//! [`migrate`] (`init -migrate-state`); [`deps`] reads a stored graph or a
//! cone to draw (`stategraph deps`, the page of `stategraph serve`).
//!
//! Commands ([`crate::commands`]) parse argv, call one entry point here and
//! render what it returns; nothing here parses a command line.

pub mod baseline;
pub mod change_set;
pub mod deps;
pub mod discover;
pub mod lease;
pub mod locked;
pub mod migrate;
pub mod pipeline;
pub mod preflight;
pub mod record;
pub mod recovery;
pub mod refresh;
pub mod revert;
pub mod saved;
pub mod session;
pub mod strategy;
pub mod verify;

use std::path::PathBuf;

use crate::db::store::PushReport;
use crate::error::Exit;
use crate::ui::Ui;

/// Frees `value` on a thread of its own: the large values of a run (the
/// snapshot, the graph's rows) take a third of a second to free at
/// 100,000 instances, and the command's result need not wait for it. The
/// process may end first, which frees them all the same.
pub fn discard<T: Send + 'static>(value: T) {
    std::thread::spawn(move || drop(value));
}

/// What kind of run writes the state (as the transaction log names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plan,
    Apply,
    Destroy,
    /// A terraform command that writes state (taint, import, state mv, ...).
    Write,
    /// `stategraph recover`: the result of an earlier run.
    Recover,
}

impl Kind {
    /// The name in the transaction log and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plan => "plan",
            Kind::Apply => "apply",
            Kind::Destroy => "destroy",
            Kind::Write => "command",
            Kind::Recover => "recover",
        }
    }
}

/// How a plan or apply ended.
#[derive(Debug)]
pub enum Outcome {
    /// Discovery found nothing to change; terraform planned nothing.
    /// `explained`: say that resources outside a change are not refreshed.
    NoChanges { explained: bool },
    /// Terraform ran; its exit code is ours.
    Ran {
        code: u8,
        /// The saved plan written (`plan -out`), as the user named it.
        saved: Option<(PathBuf, String)>,
        /// What the run wrote to the stored state.
        written: Option<(String, PushReport)>,
    },
    /// The user did not approve the plan.
    Cancelled,
}

impl Outcome {
    /// Says how the run ended, as terraform would, and returns its exit
    /// code as the command's result. `json`: stdout is terraform's JSON.
    pub fn finish(self, ui: Ui, json: bool) -> anyhow::Result<()> {
        match self {
            Outcome::NoChanges { explained } => {
                if !json {
                    ui.say(if explained {
                        "\nNo changes. Your infrastructure matches the configuration.\n\n\
                         stategraph found no change in the configuration; resources outside a \
                         change are not refreshed."
                    } else {
                        "\nNo changes. Your infrastructure matches the configuration."
                    });
                }
                Ok(())
            }
            Outcome::Ran {
                code,
                saved,
                written,
            } => {
                if let Some((path, given)) = saved {
                    ui.info(format!(
                        "stategraph: saved plan written to {} (apply it with `stategraph apply {given}`)",
                        path.display()
                    ));
                }
                if let Some((name, r)) = written {
                    let outputs = match r.outputs_changed {
                        0 => String::new(),
                        1 => ", 1 root output".to_owned(),
                        n => format!(", {n} root outputs"),
                    };
                    ui.info(format!(
                        "stategraph: transaction {} wrote {} added, {} changed, {} removed{outputs} \
                         to state \"{name}\"",
                        r.txn_id, r.added, r.changed, r.removed
                    ));
                }
                Exit::with(code)
            }
            Outcome::Cancelled => {
                ui.say("\nApply cancelled.");
                Err(Exit(1).into())
            }
        }
    }
}
