//! Scoped refresh: terraform refreshes the written instances only (a
//! refresh-only run on a state holding nothing else), then plans without
//! refresh; the plan is the same as with terraform's targeted refresh of
//! the written instances and everything they depend on.

use crate::common::*;

fn refreshed(stdout: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.contains(": Refreshing state..."))
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect();
    lines.sort();
    lines
}

const CONFIG: &str = r#"
variable "gen" {
  type    = string
  default = "1"
}

resource "terraform_data" "root" {
  input = "root"
}

resource "terraform_data" "up" {
  count = 4
  input = "up-${count.index}-${terraform_data.root.id}"
}

resource "terraform_data" "down" {
  count = 4
  input = { up = terraform_data.up[count.index].id, gen = var.gen }
}

# Reads a dependency of what changes: kept in the partial state, and
# refreshed with it.
output "root_id" {
  value = terraform_data.root.id
}
"#;

#[test]
fn only_the_written_instances_are_refreshed_and_the_plan_is_the_same() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    std::fs::remove_dir_all(wd.path().join("modules")).unwrap();
    wd.write_file("main.tf", CONFIG);
    let run = |mode: &str, args: &[&str]| {
        let out = sg_tf(&db, &wd, "counts", args)
            .env("STATEGRAPH_SCOPED_REFRESH", mode)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = run("auto", &["apply", "-auto-approve", "-no-color"]);
    assert_eq!(code, Some(0), "{out}{err}");

    let change = ["plan", "-no-color", "-detailed-exitcode", "-var", "gen=2"];
    let (code, wide, err) = run("never", &change);
    assert_eq!(code, Some(2), "{wide}{err}");
    let (code, scoped, err) = run("always", &change);
    assert_eq!(code, Some(2), "{scoped}{err}");
    // The refresh and the plan on the stored rows ran side by side; the
    // refresh found the rows as stored, so that plan stands.
    assert!(
        err.contains(
            "Refreshing the 4 written instances only, planning meanwhile... \
             done; nothing changed outside terraform"
        ),
        "{err}"
    );
    // The written instances only (and the root an output reads);
    // terraform's targeted refresh also takes every instance of what they
    // depend on.
    let mut down: Vec<String> = (0..4)
        .map(|i| format!("terraform_data.down[{i}]"))
        .collect();
    down.push("terraform_data.root".into());
    assert_eq!(refreshed(&scoped), down, "{scoped}\n----\n{err}");
    let mut both: Vec<String> = down.clone();
    both.extend((0..4).map(|i| format!("terraform_data.up[{i}]")));
    both.sort();
    assert_eq!(refreshed(&wide), both, "{wide}");
    // The same plan either way.
    assert_eq!(plan_of(&wide), plan_of(&scoped));
    assert!(
        scoped.contains("Plan: 0 to add, 4 to change, 0 to destroy."),
        "{scoped}"
    );
    // One after the other: the same refresh, the same plan.
    let out = sg_tf(&db, &wd, "counts", &change)
        .env("STATEGRAPH_SCOPED_REFRESH", "always")
        .env("STATEGRAPH_SPECULATIVE_PLAN", "0")
        .output()
        .unwrap();
    let (serial, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(2), "{serial}{err}");
    assert!(
        err.contains("Refreshing the 4 written instances only... done"),
        "{err}"
    );
    assert_eq!(refreshed(&serial), down, "{serial}");
    assert_eq!(plan_of(&serial), plan_of(&scoped));
    // auto: terraform_data refreshes without a remote call, so the scoped
    // refresh saves nothing: one run, as terraform, and no choice to make.
    let (code, auto, err) = run("auto", &change);
    assert_eq!(code, Some(2), "{auto}{err}");
    assert_eq!(refreshed(&auto), both, "{auto}");
    assert!(!err.contains("Choosing how to refresh"), "{err}");

    // Applied with a scoped refresh, the state is what terraform expects.
    let (code, out, err) = run(
        "always",
        &["apply", "-auto-approve", "-no-color", "-var", "gen=2"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 added, 4 changed, 0 destroyed"), "{out}");
    let (code, out, err) = run("never", &change);
    assert_eq!(code, Some(0), "{out}{err}");

    // A bad value is refused with the accepted ones.
    let (code, _, err) = run("sometimes", &["plan", "-no-color"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("auto, always or never"), "{err}");
}

/// Where the refresh costs API requests: the aws provider on moto.
#[test]
fn on_aws_a_scoped_refresh_makes_fewer_api_requests_for_the_same_plan() {
    let db = test_db();
    let moto = moto::Moto::start();
    let wd = moto::produce_aws_state(&moto, "aws_teams");
    // terraform wrote each role before its inline policy: the stored role
    // would lack the policy a refresh reads (a change, as far as stategraph
    // can tell). Recorded as refreshed, the rows are what the provider reads.
    wd.terraform(&[
        "apply",
        "-refresh-only",
        "-auto-approve",
        "-input=false",
        "-no-color",
    ]);
    push(&db, "aws", &wd.state_path());
    std::fs::remove_file(wd.state_path()).unwrap();
    let run = |mode: &str, args: &[&str]| {
        let out = sg_tf(&db, &wd, "aws", args)
            .env("STATEGRAPH_SCOPED_REFRESH", mode)
            // terraform's full plan for every discovery costs ~8 s per run here.
            .env_remove("STATEGRAPH_DISCOVERY_ORACLE")
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    // The first plan after the push records the discovery baseline.
    let (code, out, err) = run("never", &["plan", "-no-color", "-detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}{err}");

    let change = [
        "plan",
        "-no-color",
        "-detailed-exitcode",
        "-var",
        r#"gen={blue="2"}"#,
    ];
    let before = moto.request_count();
    let (code, wide, err) = run("never", &change);
    assert_eq!(code, Some(2), "{wide}{err}");
    let wide_requests = moto.request_count() - before;
    let before = moto.request_count();
    let (code, scoped, err) = run("always", &change);
    assert_eq!(code, Some(2), "{scoped}{err}");
    let scoped_requests = moto.request_count() - before;
    assert!(
        err.contains("written instances only, planning meanwhile... done"),
        "{err}"
    );
    assert_eq!(plan_of(&wide), plan_of(&scoped));
    assert!(
        scoped.contains("Plan: 0 to add, 6 to change, 0 to destroy."),
        "{scoped}"
    );
    assert!(
        refreshed(&scoped).len() < refreshed(&wide).len(),
        "scoped {:?}, wide {:?}",
        refreshed(&scoped),
        refreshed(&wide)
    );
    assert!(
        scoped_requests < wide_requests,
        "scoped refresh: {scoped_requests} requests, terraform's targeted refresh: {wide_requests}"
    );
    // The plan on the stored rows ran beside the refresh and stands: the
    // refresh found every written object as stored.
    assert!(
        err.contains("planning meanwhile... done; nothing changed outside terraform"),
        "{err}"
    );

    // auto: the way estimated faster, said on one line, for the same plan;
    // what the run cost is stored, and the next run estimates with it.
    let (code, auto, err) = run("auto", &change);
    assert_eq!(code, Some(2), "{auto}{err}");
    assert!(
        err.contains("Choosing how to refresh... ")
            && err.contains("not measured on this state yet"),
        "{err}"
    );
    assert_eq!(plan_of(&auto), plan_of(&wide));
    let measured = "SELECT count(*) FROM terraform_costs WHERE providers = 'aws' \
                    AND (command_s > 0 OR pair_s > 0)";
    assert_eq!(db.psql(measured), "1");
    let (code, auto, err) = run("auto", &change);
    assert_eq!(code, Some(2), "{auto}{err}");
    assert!(err.contains("measured on this state)"), "{err}");
    assert_eq!(plan_of(&auto), plan_of(&wide));

    // A written object changed outside terraform: the refresh sees it, and
    // the cone is planned again on what it found.
    moto.boto3(
        "s3 = client('s3')\n\
         s3.put_bucket_tagging(Bucket='bench-blue-data', \
         Tagging={'TagSet': [{'Key': 'edited', 'Value': 'by hand'}]})\n",
    );
    let (code, drifted, err) = run("always", &change);
    assert_eq!(code, Some(2), "{drifted}{err}");
    assert!(
        err.contains(
            r#"changed outside terraform: module.group["blue"].aws_s3_bucket.data; planning again on the refreshed state"#
        ),
        "{err}"
    );
    let updates = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains("will be updated in-place") || l.starts_with("Plan:"))
            .map(str::to_owned)
            .collect()
    };
    // The same resources updated as before the hand edit (the bucket was
    // one of them), and the edit undone.
    assert_eq!(updates(&drifted), updates(&wide), "{drifted}");
    // The plan puts the hand-edited tag back to the configuration's.
    assert!(
        drifted.contains(r#"- "edited" = "by hand" -> null"#),
        "{drifted}"
    );
}
