//! What CI steps read from stategraph is what they read from terraform:
//! `show [-json]` of a saved plan prints terraform's own rendering of it
//! (policy checks, cost estimates and PR comments run `show -json tfplan`),
//! and plan/apply/destroy print terraform's output without what only
//! exists because stategraph runs terraform with `-target` on the user's
//! behalf (the targeting warnings, a second `version` message, a destroy
//! that ends as an apply, the private plan file's name).

use crate::common::*;

const STATE: &str = "ci";

/// Two independent resources; `a` and the output read `var.g`.
const CONFIG: &str = "variable \"g\" {\n  default = \"1\"\n}\n\
resource \"terraform_data\" \"a\" {\n  input = \"a${var.g}\"\n}\n\
resource \"terraform_data\" \"b\" {\n  input = \"b\"\n}\n\
output \"x\" {\n  value = terraform_data.a.output\n}\n";

/// `stategraph --state ci ARGS` in `wd`, asserting success: (stdout, stderr).
fn sg(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> (String, String) {
    assert_ok(&format!("stategraph {args:?}"), &sg_in(db, wd, STATE, args))
}

/// A workdir with [`CONFIG`], applied by stategraph.
fn applied(db: &TestDb) -> TfWorkdir {
    let wd = TfWorkdir::empty();
    wd.write_file("main.tf", CONFIG);
    sg(db, &wd, &["apply", "-auto-approve", "-no-color"]);
    wd
}

/// Terraform's targeting warnings, in any of their forms, are not in `out`.
#[track_caller]
fn no_targeting_noise(what: &str, out: &str) {
    for text in [
        "Resource targeting is in effect",
        "Applied changes may be incomplete",
        "-target option",
    ] {
        assert!(!out.contains(text), "{what} prints {text:?}:\n{out}");
    }
}

/// The messages of `-json` output, each line parsed.
#[track_caller]
fn messages(what: &str, stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: a line of stdout is not JSON ({e}): {l}"))
        })
        .collect()
}

#[test]
fn a_saved_plan_shows_as_terraform_shows_its_own_plan_file() {
    let db = test_db();
    let wd = applied(&db);

    // Outside automation terraform names the plan file and how to apply it:
    // the user's file and stategraph's command, not the private ones.
    let out = sg_tf(
        &db,
        &wd,
        STATE,
        &["plan", "-no-color", "-var", "g=2", "-out=ci.plan"],
    )
    .env_remove("TF_IN_AUTOMATION")
    .output()
    .expect("run stategraph");
    let (stdout, _) = assert_ok("plan -out", &out);
    assert!(stdout.contains("Saved the plan to: ci.plan\n"), "{stdout}");
    assert!(
        stdout.contains("    stategraph apply \"ci.plan\"\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("terraform apply"), "{stdout}");
    no_targeting_noise("plan -out", &stdout);
    let plan = wd.path().join("ci.plan");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&plan).unwrap().permissions().mode() & 0o777,
        0o600,
        "the saved plan holds the state: it must be private"
    );

    // `show -json` is terraform's plan JSON.
    let (json, _) = sg(&db, &wd, &["show", "-json", "ci.plan"]);
    let shown: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("show -json printed no JSON ({e}):\n{json}"));
    assert!(shown["format_version"].is_string(), "{json}");
    let changes = shown["resource_changes"]
        .as_array()
        .expect("resource_changes");
    let a = changes
        .iter()
        .find(|c| c["address"] == "terraform_data.a")
        .unwrap_or_else(|| panic!("terraform_data.a is not in resource_changes: {json}"));
    assert_eq!(
        a["change"]["actions"],
        serde_json::json!(["update"]),
        "{json}"
    );
    assert_eq!(a["change"]["after"]["input"], "a2", "{json}");
    assert!(
        changes
            .iter()
            .filter(|c| c["address"] != "terraform_data.a")
            .all(|c| c["change"]["actions"] == serde_json::json!(["no-op"])),
        "{json}"
    );

    // `show` is what terraform shows for its own plan of the same change
    // on the same state.
    let (human, _) = sg(&db, &wd, &["show", "-no-color", "ci.plan"]);
    let pulled = sg(&db, &wd, &["state", "pull"]).0;
    let check = TfWorkdir::empty();
    check.write_file("main.tf", CONFIG);
    std::fs::write(check.state_path(), pulled).unwrap();
    check.terraform(&["init", "-no-color"]);
    check.terraform(&["plan", "-no-color", "-var", "g=2", "-out=tf.plan"]);
    let expected = check.terraform(&["show", "-no-color", "tf.plan"]);
    assert_eq!(human, text(&expected.stdout));
    assert!(human.contains("terraform_data.a will be updated in-place"));

    // A plan file of terraform's own still reads as terraform reads it.
    std::fs::copy(check.path().join("tf.plan"), wd.path().join("tf.plan")).unwrap();
    let (theirs, _) = sg(&db, &wd, &["show", "-json", "tf.plan"]);
    let theirs: serde_json::Value = serde_json::from_str(&theirs).expect("JSON");
    assert!(theirs["resource_changes"].is_array(), "{theirs}");

    // Applying the saved plan says nothing of -target either.
    let (applied, _) = sg(&db, &wd, &["apply", "-no-color", "ci.plan"]);
    no_targeting_noise("apply FILE", &applied);
    assert!(applied.contains("Apply complete!"), "{applied}");
}

#[test]
fn plan_apply_and_destroy_print_terraforms_output_without_targeting() {
    let db = test_db();
    let wd = applied(&db);

    // Human output, plain and coloured: the cone is said once, by stategraph.
    let (plan, stderr) = sg(&db, &wd, &["plan", "-no-color", "-var", "g=2"]);
    no_targeting_noise("plan", &plan);
    assert!(plan.contains("1 to change"), "{plan}");
    assert_eq!(
        stderr.matches("Computing change cone...").count(),
        1,
        "{stderr}"
    );
    let (plan, _) = sg(&db, &wd, &["plan", "-var", "g=2"]);
    no_targeting_noise("plan (colour)", &plan);
    assert!(!plan.contains('╷'), "{plan}");
    let (apply, _) = sg(&db, &wd, &["apply", "-auto-approve", "-var", "g=2"]);
    no_targeting_noise("apply (colour)", &apply);
    assert!(apply.contains("Apply complete!"), "{apply}");

    // -json: no targeting diagnostic, and one `version` message although
    // terraform runs twice (plan, then apply).
    let (json, _) = sg(&db, &wd, &["plan", "-json", "-var", "g=3"]);
    no_targeting_noise("plan -json", &json);
    messages("plan -json", &json);
    let (json, _) = sg(
        &db,
        &wd,
        &["apply", "-json", "-auto-approve", "-var", "g=3"],
    );
    no_targeting_noise("apply -json", &json);
    let all = messages("apply -json", &json);
    let versions = all.iter().filter(|m| m["type"] == "version").count();
    assert_eq!(versions, 1, "{json}");
    assert_eq!(all[0]["type"], "version", "{json}");
    assert!(
        all.iter().any(|m| m["type"] == "change_summary"
            && m["changes"]["operation"] == "apply"
            && m["changes"]["change"] == 1),
        "{json}"
    );

    // destroy ends as terraform's destroy does.
    let (destroy, _) = sg(&db, &wd, &["destroy", "-auto-approve", "-no-color"]);
    no_targeting_noise("destroy", &destroy);
    assert_eq!(
        destroy.trim_end().lines().last(),
        Some("Destroy complete! Resources: 2 destroyed."),
        "{destroy}"
    );
    // Its plan lists the outputs it removes (as terraform's destroy does),
    // but no `Outputs:` block follows.
    assert!(
        !destroy.lines().any(|l| l.trim_end() == "Outputs:"),
        "{destroy}"
    );
    assert!(destroy.contains("Changes to Outputs:"), "{destroy}");
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "0");

    // And in -json.
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let (json, _) = sg(&db, &wd, &["destroy", "-json", "-auto-approve"]);
    no_targeting_noise("destroy -json", &json);
    let all = messages("destroy -json", &json);
    let last = all.last().expect("messages");
    assert_eq!(last["type"], "change_summary", "{json}");
    assert_eq!(
        last["@message"], "Destroy complete! Resources: 2 destroyed.",
        "{json}"
    );
    assert_eq!(last["changes"]["operation"], "destroy", "{json}");
    assert_eq!(all.iter().filter(|m| m["type"] == "version").count(), 1);
}

#[test]
fn console_evaluates_against_the_stored_state() {
    let db = test_db();
    let wd = applied(&db);
    let mut console = sg_tf(&db, &wd, STATE, &["console"]);
    console
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = console.spawn().expect("run stategraph console");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"terraform_data.a.output\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, _) = assert_ok("console", &out);
    assert_eq!(stdout, "\"a1\"\n");
    // Nothing of terraform's console state or lock in the user's directory.
    assert!(!wd.path().join(".terraform.tfstate.lock.info").exists());
    assert!(!wd.path().join("terraform.tfstate").exists());
}
