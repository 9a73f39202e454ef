//! The state name: `--state`, else the root module's path relative to the git
//! top level plus the terraform workspace.

use std::path::Path;

use crate::common::*;

const EMPTY_STATE: &str = r#"{"version": 4, "terraform_version": "1.11.4", "serial": 1,
  "lineage": "3f1c8c2e-0000-4000-8000-000000000001", "outputs": {}, "resources": [], "check_results": null}"#;

fn push_from(db: &TestDb, cwd: &Path, envs: &[(&str, &str)], extra: &[&str]) {
    let file = cwd.join("empty.json");
    std::fs::write(&file, EMPTY_STATE).unwrap();
    let mut cmd = stategraph(db);
    cmd.current_dir(cwd)
        .env_remove("TF_WORKSPACE")
        .env_remove("TF_DATA_DIR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["state", "push", "-force", file.to_str().unwrap()]);
    let out = cmd.args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn state_name_follows_git_path_and_workspace() {
    let db = test_db();
    let repo = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(repo.path())
        .status()
        .expect("git is needed for this test");
    assert!(status.success());
    let root = repo.path().join("infra/net");
    std::fs::create_dir_all(&root).unwrap();

    push_from(&db, &root, &[], &[]);
    push_from(&db, &root, &[("TF_WORKSPACE", "staging")], &[]);
    std::fs::create_dir_all(root.join(".terraform")).unwrap();
    std::fs::write(root.join(".terraform/environment"), "prod").unwrap();
    push_from(&db, &root, &[], &[]);
    // -chdir from the top of the repository names the same root module.
    push_from(
        &db,
        repo.path(),
        &[("TF_WORKSPACE", "qa")],
        &["-chdir=infra/net"],
    );
    push_from(&db, repo.path(), &[], &[]);
    push_from(&db, repo.path(), &[], &["--state", "explicit"]);

    assert_eq!(
        db.psql("SELECT string_agg(name, ',' ORDER BY name) FROM states"),
        ".,explicit,infra/net,infra/net:prod,infra/net:qa,infra/net:staging"
    );
}

#[test]
fn outside_git_the_absolute_path_names_the_state() {
    let db = test_db();
    let dir = tempfile::tempdir().unwrap();
    push_from(&db, dir.path(), &[], &[]);
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(
        db.psql("SELECT name FROM states"),
        canonical.to_str().unwrap()
    );
}
