//! The `slow_chain` scenario of the failure tests (checkpoints, signals,
//! database outages, secrets): a private copy of `fixtures/tf/slow_chain`
//! stored as state `slow`, applied at gen 1, then an apply to gen 2 during
//! which `terraform_data.first` is finished (and recorded by a checkpoint)
//! at once while `terraform_data.second` is replaced for `sleep_seconds`:
//! a run caught in the middle, for the test to kill, interrupt, or cut off
//! from its database.
//!
//! Owns: the workdir, the temp dir every stategraph run of the scenario
//! uses, the two applies, waiting for the checkpoint of `first`, and the
//! plan at gen 2 that shows the stored state is what was applied.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::Duration;

use super::{assert_running, input_gen, sg_tf, wait_until, TestDb, TfWorkdir};

/// The stored state's name.
pub const STATE: &str = "slow";

/// One `slow_chain` checkout and the database its runs use.
pub struct SlowChain {
    /// The terraform workdir (the root module).
    pub wd: TfWorkdir,
    /// `TMPDIR` of every stategraph run here, inside the workdir: the
    /// private dirs of its runs are its own. No other stategraph on the
    /// machine (another test of this binary, a bench) sweeps a dead run's
    /// dir before the test looks at it, and what is left can be counted.
    pub tmp: PathBuf,
    db: TestDb,
}

impl SlowChain {
    /// A fresh copy of the fixture whose runs use `db` (nothing applied yet).
    pub fn new(db: &TestDb) -> SlowChain {
        let wd = TfWorkdir::from_fixture("slow_chain");
        let tmp = wd.path().join("tmp");
        std::fs::create_dir(&tmp).expect("creating the scenario's temp dir");
        SlowChain {
            wd,
            tmp,
            db: db.clone(),
        }
    }

    /// `stategraph --state slow ARGS` in the workdir, with the scenario's
    /// `TMPDIR`; not started.
    pub fn sg(&self, args: &[&str]) -> Command {
        let mut cmd = sg_tf(&self.db, &self.wd, STATE, args);
        cmd.env("TMPDIR", &self.tmp);
        cmd
    }

    /// The first apply: every resource at gen 1, no sleeping.
    pub fn apply_gen1(&self) -> Command {
        self.sg(&["apply", "-auto-approve", "-no-color"])
    }

    /// The apply to gen 2 in which `second` takes `sleep_seconds`;
    /// `global` flags (e.g. `--lock-lease=5s`) go before `apply`.
    pub fn apply_gen2(&self, global: &[&str], sleep_seconds: u32) -> Command {
        let sleep = format!("sleep_seconds={sleep_seconds}");
        let mut args = global.to_vec();
        args.extend([
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            "gen=2",
            "-var",
            &sleep,
        ]);
        self.sg(&args)
    }

    /// `plan -detailed-exitcode` at gen 2: once gen 2 is applied and
    /// recorded, it finds nothing to do (see [`assert_no_changes`]).
    pub fn plan_gen2(&self) -> Command {
        self.sg(&["plan", "-detailed-exitcode", "-no-color", "-var", "gen=2"])
    }

    /// The `gen` that `terraform_data.NAME` is recorded with.
    pub fn gen(&self, name: &str) -> String {
        input_gen(&self.db, &format!("terraform_data.{name}"))
    }

    /// Waits until `first` is recorded at gen 2 while the gen-2 `apply`
    /// runs (a checkpoint: terraform is in the slow step now); panics if
    /// the apply ends first or nothing is recorded within 60 s.
    #[track_caller]
    pub fn wait_until_first_is_recorded(&self, apply: &mut Child) {
        wait_until(
            "no checkpoint recorded terraform_data.first at gen 2",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                if self.gen("first") == "2" {
                    return true;
                }
                assert_running(apply, "the apply ended before its checkpoint was seen");
                false
            },
        );
    }
}

/// Asserts that a run of [`SlowChain::plan_gen2`] found no changes: the
/// configuration and the stored state agree, so what was applied is what
/// was recorded.
#[track_caller]
pub fn assert_no_changes(plan: &Output) {
    assert_eq!(
        plan.status.code(),
        Some(0),
        "the stored state does not match what was applied:\n{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
}
