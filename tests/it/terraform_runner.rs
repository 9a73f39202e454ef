//! The terraform runner against the real terraform binary: discovery, a
//! refresh-less plan and a targeted apply through a private [`RunDir`],
//! the user's directory left byte-identical, concurrent workspaces in one
//! directory, exit codes and interrupts.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stategraph::terraform::rundir::{Layout, OVERRIDE_FILE};
use stategraph::terraform::{plan, Output, RunDir, Terraform, TerraformError};
use stategraph::tfstate::{self, State};

use crate::common::produce_state;
use crate::common::terraform::{self as tfh, TfWorkdir};

const GEN_A2: &str = r#"gen={a="2",b="1",c="1"}"#;
const BRANCH_A_L1: &str = r#"module.branch["a"].terraform_data.l1"#;
const BRANCH_A_L2: &str = r#"module.branch["a"].terraform_data.l2"#;

/// A private run dir for the root module in `root`, as stategraph makes them.
fn run_dir(root: &Path, state: &State) -> RunDir {
    Layout {
        temp_dir: std::env::temp_dir(),
        root: root.to_path_buf(),
        user_data_dir: root.join(".terraform"),
        watcher: None,
    }
    .run_dir(state)
    .unwrap()
}

/// The real terraform with the test environment (its own CLI config, no prompts).
fn terraform(wd: &TfWorkdir) -> Terraform {
    let mut tf =
        Terraform::discover(Some(&tfh::terraform_bin()), &[]).expect("terraform is usable");
    for key in tfh::leaking_env_vars() {
        tf = tf.without_env(&key);
    }
    tf.with_env("TF_CLI_CONFIG_FILE", wd.cli_config())
        .with_env("CHECKPOINT_DISABLE", "1")
        .with_env("TF_INPUT", "0")
}

fn read_state(path: &Path) -> State {
    tfstate::parse(&fs::read(path).expect("reading a state")).expect("a valid state")
}

/// Every file and symlink under `dir`: relative path -> bytes (or link target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().to_path_buf();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, target.to_string_lossy().as_bytes().to_vec());
            } else if kind.is_dir() {
                out.insert(rel.join(""), Vec::new());
                walk(base, &path, out);
            } else {
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `(instance address -> attributes)` of a state.
fn instances(state: &State) -> BTreeMap<String, serde_json::Value> {
    state
        .resources
        .iter()
        .flat_map(|r| {
            let addr = r.address();
            r.instances
                .iter()
                .map(move |i| (i.address(&addr), i.attributes.clone().unwrap_or_default()))
        })
        .collect()
}

/// `fixtures/tf/chain` applied with terraform in its own directory (no
/// backend block, a local `terraform.tfstate` there), plus a lock file.
fn chain_user_dir() -> TfWorkdir {
    let wd = produce_state("chain");
    // Built-in providers only: terraform writes no lock file; give one anyway
    // so that its bytes are checked.
    wd.write_file(
        ".terraform.lock.hcl",
        "# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost in future updates.\n",
    );
    assert!(wd.path().join(".terraform/modules/modules.json").is_file());
    wd
}

async fn plan_json(ws: &RunDir, tf: &Terraform, vars: &[&str]) -> plan::Plan {
    let plan_file = ws.plan_path("discover");
    ws.command(tf)
        .args(["plan", "-refresh=false", "-input=false", "-no-color"])
        .args(vars.iter().flat_map(|v| ["-var", v]))
        .arg(format!("-out={}", plan_file.display()))
        .stdout(Output::Capture)
        .run_ok()
        .await
        .expect("terraform plan");
    let shown = ws
        .command(tf)
        .args(["show", "-json", "-no-color"])
        .arg(&plan_file)
        .stdout(Output::Capture)
        .run_ok()
        .await
        .expect("terraform show -json");
    plan::parse(&shown.stdout).expect("plan JSON")
}

#[test]
fn discovers_terraform_and_its_version() {
    let tf = Terraform::discover(Some(&tfh::terraform_bin()), &[]).unwrap();
    assert!(tf.version() >= stategraph::terraform::MIN_VERSION);
    assert!(!tf.is_opentofu());
    let out = std::process::Command::new(tfh::terraform_bin())
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("v{}", tf.version_text())),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let none = Terraform::discover(None, &[]).unwrap_err();
    assert!(matches!(none, TerraformError::NotConfigured));
    assert!(none.to_string().contains("STATEGRAPH_TERRAFORM"), "{none}");
    let missing = Terraform::discover(Some(Path::new("/nonexistent/terraform")), &[]).unwrap_err();
    let msg = missing.to_string();
    assert!(
        msg.contains("/nonexistent/terraform") && msg.contains(">= 1.5.0"),
        "{msg}"
    );
}

#[tokio::test]
async fn plans_and_applies_the_cone_leaving_the_user_dir_untouched() {
    let wd = chain_user_dir();
    let tf = terraform(&wd);
    let before = snapshot(wd.path());
    let state = read_state(&wd.state_path());

    let ws = run_dir(wd.path(), &state);
    assert!(wd.path().join(OVERRIDE_FILE).is_file());
    let started = Instant::now();
    ws.init(&tf).await.expect("terraform init in the workspace");
    let init_time = started.elapsed();

    let started = Instant::now();
    let plan = plan_json(&ws, &tf, &[GEN_A2]).await;
    let plan_time = started.elapsed();
    // l2 is updated in place and keeps its id, so l3, l4 and join stay no-op.
    assert_eq!(plan.changed_addresses(), [BRANCH_A_L1, BRANCH_A_L2]);
    assert!(plan.complete);

    let started = Instant::now();
    ws.command(&tf)
        .args(["apply", "-auto-approve", "-input=false", "-no-color"])
        .args(["-var", GEN_A2])
        .args(
            plan.changed_addresses()
                .iter()
                .map(|a| format!("-target={a}")),
        )
        .stdout(Output::Capture)
        .run_ok()
        .await
        .expect("targeted apply");
    let apply_time = started.elapsed();
    eprintln!("init {init_time:?}, plan+show {plan_time:?}, targeted apply {apply_time:?}");

    let after = ws.read_state().unwrap();
    assert_eq!(after.lineage, state.lineage);
    assert!(
        after.serial > state.serial,
        "serial {} -> {}",
        state.serial,
        after.serial
    );
    let (old, new) = (instances(&state), instances(&after));
    assert_eq!(
        old.keys().collect::<Vec<_>>(),
        new.keys().collect::<Vec<_>>()
    );
    let changed: Vec<&String> = old.keys().filter(|k| old[*k] != new[*k]).collect();
    assert_eq!(changed, [BRANCH_A_L1, BRANCH_A_L2]);
    // The state handed in was not the user's file.
    assert_eq!(read_state(&wd.state_path()), state);

    let private = ws.state_path().parent().unwrap().to_path_buf();
    drop(ws);
    assert!(!private.exists(), "the private dir is removed");
    assert_eq!(
        snapshot(wd.path()),
        before,
        "the user's directory is byte-identical"
    );
}

#[tokio::test]
async fn two_workspaces_in_one_directory() {
    let wd = chain_user_dir();
    let tf = terraform(&wd);
    let before = snapshot(wd.path());
    let state = read_state(&wd.state_path());
    let override_file = wd.path().join(OVERRIDE_FILE);

    let a = run_dir(wd.path(), &state);
    let b = run_dir(wd.path(), &state);
    let (ra, rb) = tokio::join!(
        async {
            a.init(&tf).await?;
            Ok::<_, TerraformError>(plan_json(&a, &tf, &[GEN_A2]).await)
        },
        async {
            b.init(&tf).await?;
            Ok::<_, TerraformError>(plan_json(&b, &tf, &[r#"gen={a="1",b="2",c="1"}"#]).await)
        }
    );
    assert_eq!(ra.unwrap().changed_addresses(), [BRANCH_A_L1, BRANCH_A_L2]);
    assert_eq!(
        rb.unwrap().changed_addresses(),
        [
            r#"module.branch["b"].terraform_data.l1"#,
            r#"module.branch["b"].terraform_data.l2"#
        ]
    );
    drop(a);
    assert!(override_file.is_file(), "b still runs: the override stays");
    drop(b);
    assert!(!override_file.exists(), "the last run removes the override");
    assert_eq!(snapshot(wd.path()), before);

    // A leftover of a killed run is removed by the next run that ends.
    fs::write(&override_file, "terraform {\n  backend \"local\" {}\n}\n").unwrap();
    drop(run_dir(wd.path(), &state));
    assert!(!override_file.exists());
}

#[tokio::test]
async fn exit_codes_pass_through() {
    let wd = chain_user_dir();
    let tf = terraform(&wd);
    let state = read_state(&wd.state_path());
    let ws = run_dir(wd.path(), &state);
    ws.init(&tf).await.unwrap();

    let done = ws
        .command(&tf)
        .args(["plan", "-input=false", "-no-color", "-var", "nope=1"])
        .stdout(Output::Capture)
        .run()
        .await
        .unwrap();
    assert_eq!(done.code, 1);
    let err = ws
        .command(&tf)
        .args(["plan", "-input=false", "-no-color", "-var", "nope=1"])
        .stdout(Output::Capture)
        .run_ok()
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Some(1), "{err}");
    // `plan -detailed-exitcode` with changes: 2, passed through.
    let done = ws
        .command(&tf)
        .args(["plan", "-refresh=false", "-input=false", "-no-color"])
        .args(["-detailed-exitcode", "-var", GEN_A2])
        .stdout(Output::Capture)
        .run()
        .await
        .unwrap();
    assert_eq!(done.code, 2);
    drop(ws);

    // A configuration error fails init with terraform's code.
    let broken = TfWorkdir::from_fixture("chain");
    broken.write_file("broken.tf", "resource \"terraform_data\" {\n");
    let ws = run_dir(broken.path(), &state);
    let err = ws.init(&terraform(&broken)).await.unwrap_err();
    assert_eq!(err.exit_code(), Some(1), "{err}");
}

/// Terraform stopped by SIGINT (sent to its pid, as a forwarded interrupt
/// would be) finishes gracefully: its exit code comes back, and the state it
/// wrote is readable. Forwarding by stategraph itself needs a signal to this
/// test process, which would reach every concurrent test's terraform; it is
/// tested through the CLI.
#[tokio::test]
async fn sigint_stops_terraform_gracefully() {
    let wd = chain_user_dir();
    let tf = terraform(&wd);
    let state = read_state(&wd.state_path());
    let ws = run_dir(wd.path(), &state);
    ws.init(&tf).await.unwrap();

    let started = Instant::now();
    let apply = ws
        .command(&tf)
        .args(["apply", "-auto-approve", "-input=false", "-no-color"])
        .args([
            "-var",
            r#"gen={a="3",b="3",c="3"}"#,
            "-var",
            "sleep_seconds=30",
        ])
        .stdout(Output::Capture)
        .run();
    let signaller = async {
        let pid = loop {
            if let Some(pid) = find_child("sleep_seconds=30") {
                break pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "terraform never started"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Let the provisioners start sleeping.
        tokio::time::sleep(Duration::from_secs(2)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    };
    let (done, ()) = tokio::join!(apply, signaller);
    let done = done.unwrap();
    assert_eq!(done.code, 1, "{}", String::from_utf8_lossy(&done.stdout));
    assert!(started.elapsed() < Duration::from_secs(25), "stopped early");
    assert!(String::from_utf8_lossy(&done.stdout).contains("Interrupt received"));
    // Terraform wrote a consistent state on its way out.
    let after = ws.read_state().unwrap();
    assert_eq!(after.lineage, state.lineage);
}

/// A direct child of this process that runs terraform with `needle` in its
/// command line. Every test of the binary shares this process, so the
/// children of the other tests running meanwhile are ours too: only
/// terraform itself may get the signal, not, say, a stategraph another
/// test started with the same variable.
fn find_child(needle: &str) -> Option<i32> {
    let me = std::process::id().to_string();
    let terraform = fs::canonicalize(tfh::terraform_bin()).ok();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1));
        if ppid != Some(me.as_str()) || fs::read_link(entry.path().join("exe")).ok() != terraform {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            return Some(pid);
        }
    }
    None
}
