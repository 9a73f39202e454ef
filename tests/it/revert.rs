//! Never silently revert another checkout's change: every transaction
//! records the commit and branch it ran from; a plan that would change a
//! row last written from a commit this checkout does not contain says so
//! per resource, and an apply refuses unless `-allow-revert` is given.
//!
//! Two clones of one repository (a bare `origin` in a temp dir) on one
//! database: both name the same state after the remote.

use std::path::Path;
use std::process::Command;

use crate::common::*;

const CONFIG: &str = r#"
resource "terraform_data" "x" {
  input = "1"
}

resource "terraform_data" "y" {
  input = "1"
}
"#;

/// `git ARGS` in `dir`, asserting success; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=tester",
            "-c",
            "user.email=tester@example.com",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is needed for these tests (apt-get install git)");
    assert!(
        out.status.success(),
        "git {args:?} failed in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A workdir that is a clone of `origin` at branch `main` (files come from
/// the repository; the harness's own files are ignored).
fn clone(origin: &Path) -> TfWorkdir {
    let wd = TfWorkdir::from_fixture("chain");
    for e in std::fs::read_dir(wd.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".tf") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    git(wd.path(), &["init", "-q"]);
    git(
        wd.path(),
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    git(wd.path(), &["fetch", "-q", "origin"]);
    git(
        wd.path(),
        &["checkout", "-q", "-f", "-B", "main", "origin/main"],
    );
    wd
}

fn input_of(db: &TestDb, address: &str) -> String {
    db.psql(&format!(
        "SELECT attributes->'input'->>'value' FROM instances WHERE address = '{address}'"
    ))
}

#[test]
fn an_apply_that_would_undo_another_checkouts_change_is_refused_and_a_plan_says_so() {
    let db = test_db();
    let repo = tempfile::tempdir().unwrap();
    let origin = repo.path().join("origin.git");
    std::fs::create_dir(&origin).unwrap();
    git(&origin, &["init", "-q", "--bare"]);
    // The first commit, on main, from a scratch work tree.
    let seed = repo.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("main.tf"), CONFIG).unwrap();
    std::fs::write(seed.join(".gitignore"), "*\n!main.tf\n!.gitignore\n").unwrap();
    git(&seed, &["init", "-q"]);
    git(&seed, &["add", "main.tf", ".gitignore"]);
    git(&seed, &["commit", "-q", "-m", "x and y"]);
    git(
        &seed,
        &[
            "push",
            "-q",
            origin.to_str().unwrap(),
            "HEAD:refs/heads/main",
        ],
    );

    let (a, b) = (clone(&origin), clone(&origin));
    assert_ok(
        "the first apply, from main",
        &sg_wd(&db, &a, &["apply", "-auto-approve", "-no-color"])
            .output()
            .unwrap(),
    );

    // Team A changes x on a branch of its own and applies it; B's checkout
    // never sees that commit.
    git(a.path(), &["checkout", "-q", "-b", "team-a"]);
    a.write_file(
        "main.tf",
        &CONFIG.replacen("input = \"1\"", "input = \"2\"", 1),
    );
    git(a.path(), &["commit", "-q", "-am", "x is 2"]);
    let team_a = git(a.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    assert_ok(
        "team A's apply",
        &sg_wd(&db, &a, &["apply", "-auto-approve", "-no-color"])
            .output()
            .unwrap(),
    );
    assert_eq!(input_of(&db, "terraform_data.x"), "2");
    assert_eq!(
        db.psql(
            "SELECT git_commit || ' ' || git_branch FROM transactions ORDER BY id DESC LIMIT 1"
        ),
        format!("{team_a} team-a"),
        "the transaction does not record where it ran from"
    );

    // B's plan would set x back to 1: it says whose change that undoes.
    let plan = sg_wd(&db, &b, &["plan", "-no-color"]).output().unwrap();
    assert_ok("B's plan", &plan);
    let said = String::from_utf8_lossy(&plan.stderr);
    assert!(
        said.contains(&format!(
            "terraform_data.x was last changed by transaction {} from commit {} on branch team-a, \
             which this checkout does not contain",
            db.psql("SELECT max(id) FROM transactions WHERE git_branch = 'team-a'"),
            &team_a[..12]
        )),
        "{said}"
    );
    assert!(!said.contains("terraform_data.y was last"), "{said}");

    // B's apply is refused (it used to quietly set x back to 1).
    let out = sg_wd(&db, &b, &["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("would revert changes this checkout does not contain")
            && said.contains("-allow-revert"),
        "{said}"
    );
    assert_eq!(input_of(&db, "terraform_data.x"), "2", "x was reverted");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");

    // Asked for, the revert is applied.
    let out = sg_wd(
        &db,
        &b,
        &["apply", "-auto-approve", "-allow-revert", "-no-color"],
    )
    .output()
    .unwrap();
    assert_ok("B's apply with -allow-revert", &out);
    assert_eq!(input_of(&db, "terraform_data.x"), "1");

    // A's checkout contains the commit B applied from (main): applying x = 2
    // again reverts nothing of B's, and is not refused.
    let out = sg_wd(&db, &a, &["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    assert_ok("team A's apply after B's", &out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("revert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(input_of(&db, "terraform_data.x"), "2");
}
