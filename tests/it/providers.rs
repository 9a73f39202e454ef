//! Terraform's plans served by one provider process each, started by
//! stategraph (`src/terraform/providers.rs`), with terraform's own checks of
//! the lock file kept: the aws provider on moto.

use crate::common::*;

/// Processes whose working directory is `dir` or below and whose program is
/// the aws provider: none may outlive the run.
fn providers_running_in(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        let (Ok(cwd), Ok(exe)) = (
            std::fs::read_link(p.join("cwd")),
            std::fs::read_link(p.join("exe")),
        ) else {
            continue;
        };
        if cwd.starts_with(&dir) && exe.to_string_lossy().contains("terraform-provider-aws") {
            found.push(format!("{} {}", p.display(), exe.display()));
        }
    }
    found
}

#[test]
fn a_plan_is_served_by_one_aws_process_and_the_lock_file_still_holds() {
    let db = test_db();
    let moto = moto::Moto::start();
    let wd = moto::produce_aws_state(&moto, "aws_small");
    push(&db, "aws", &wd.state_path());
    std::fs::remove_file(wd.state_path()).unwrap();
    let run = |shared: &str| {
        let out = sg_tf(
            &db,
            &wd,
            "aws",
            &["plan", "-no-color", "-detailed-exitcode"],
        )
        .env("STATEGRAPH_SHARED_PROVIDERS", shared)
        // terraform's full plan for every discovery costs ~8 s per run here.
        .env_remove("STATEGRAPH_DISCOVERY_ORACLE")
        .output()
        .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    const SHARED: &str =
        "Starting terraform's providers once for its plan... hashicorp/aws 5.100.0";
    // The first plan after the push records the discovery baseline.
    let (code, out, err) = run("1");
    assert_eq!(code, Some(0), "{out}{err}");
    // A plan with nothing to change starts no provider, so hashes nothing.
    let fresh = wd.path().join(".sg-data-fresh");
    let out = sg_tf(
        &db,
        &wd,
        "aws",
        &["plan", "-no-color", "-detailed-exitcode"],
    )
    .env("STATEGRAPH_DATA_DIR", &fresh)
    .env_remove("STATEGRAPH_DISCOVERY_ORACLE")
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!fresh.join("providers").exists());

    let main = wd.path().join("main.tf");
    let text_of = std::fs::read_to_string(&main).unwrap();
    let edited = text_of.replace(
        "tags       = { Name = var.name }",
        "tags       = { Name = var.name, team = \"b\" }",
    );
    assert_ne!(edited, text_of, "the fixture's VPC tags moved");
    std::fs::write(&main, &edited).unwrap();

    let (code, shared, err) = run("1");
    assert_eq!(code, Some(2), "{shared}{err}");
    assert!(err.contains(SHARED), "{err}");
    assert!(
        shared.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{shared}"
    );
    assert!(
        shared.contains("# aws_vpc.main will be updated in-place"),
        "{shared}"
    );
    assert_eq!(providers_running_in(wd.path()), Vec::<String>::new());
    // The package was hashed once, as terraform hashes it, and kept.
    let hashes = data_dir(&wd).join("providers");
    assert_eq!(std::fs::read_dir(&hashes).unwrap().count(), 1);

    // Terraform starting its providers itself plans the same.
    let (code, own, err) = run("0");
    assert_eq!(code, Some(2), "{own}{err}");
    assert!(!err.contains("Starting terraform's providers"), "{err}");
    assert_eq!(plan_of(&shared), plan_of(&own));

    // A second configuration of aws (an alias): one process would be
    // configured twice, so terraform starts its own, and plans the same.
    let alias = wd.path().join("alias.tf");
    std::fs::write(
        &alias,
        moto.provider_block().replace(
            "provider \"aws\" {",
            "provider \"aws\" {\n  alias = \"second\"",
        ),
    )
    .unwrap();
    let (code, aliased, err) = run("1");
    assert_eq!(code, Some(2), "{aliased}{err}");
    assert!(!err.contains("Starting terraform's providers"), "{err}");
    assert_eq!(plan_of(&shared), plan_of(&aliased));
    std::fs::remove_file(&alias).unwrap();

    // A package the lock file does not list: refused as terraform refuses it.
    let lock_path = wd.path().join(".terraform.lock.hcl");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    let h1 = lock.find("\"h1:").expect("the lock file lists an h1 hash") + 4;
    let mut tampered = lock.clone();
    tampered.replace_range(
        h1..h1 + 4,
        if &lock[h1..h1 + 4] == "AAAA" {
            "BBBB"
        } else {
            "AAAA"
        },
    );
    std::fs::write(&lock_path, tampered).unwrap();
    let (code, out, err) = run("1");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(!err.contains("Starting terraform's providers"), "{err}");
    assert!(
        format!("{out}{err}")
            .contains("does not match any of the checksums recorded in the dependency lock file"),
        "{out}{err}"
    );
    std::fs::write(&lock_path, &lock).unwrap();

    // A version constraint the locked version does not meet: the same.
    std::fs::write(
        &main,
        edited.replace("version = \"5.100.0\"", "version = \"< 5.0\""),
    )
    .unwrap();
    let (code, out, err) = run("1");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(!err.contains("Starting terraform's providers"), "{err}");
    assert!(
        format!("{out}{err}").contains("doesn't match the updated version constraints"),
        "{out}{err}"
    );
    assert_eq!(providers_running_in(wd.path()), Vec::<String>::new());
}
