//! The differential corpus: configurations shaped like widely used modules
//! (`fixtures/corpus/*`: a VPC, buckets, IAM roles) and, for each, a
//! scripted sequence of the edits teams make. After each edit,
//! `stategraph plan -detailed-exitcode` must plan what terraform's own plan
//! of the whole configuration plans on the state stategraph stored (the
//! same resource actions, output changes, totals and exit code); then
//! stategraph applies it, and terraform on the stored state must find
//! nothing left to do.
//!
//! Discovery runs as for a user (no oracle), so the run also counts how
//! often it fell back to terraform's plan of the whole configuration; and
//! with `STATEGRAPH_VERIFY=1`, so `plan -verify` is checked on every step.
//! Each configuration prints one summary line (`cargo test --test it
//! corpus:: -- --nocapture` shows them). Any mismatch fails the test.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::*;

const STATE: &str = "corpus";

/// One edit of the configuration's files.
enum Edit {
    /// `(file, text)`: writes the file.
    Write(&'static str, String),
    /// `(file, from, to)`: replaces `from`, which must be there, by `to`.
    Replace(&'static str, &'static str, &'static str),
    /// Removes the file.
    Remove(&'static str),
}

/// One step of a configuration's script.
struct Step {
    what: &'static str,
    edits: Vec<Edit>,
    /// Terraform's flags for the plan and the apply (`-var`, `-target`, ...).
    args: Vec<String>,
    /// Environment of both (`TF_VAR_*`).
    env: Vec<(String, String)>,
    /// Whether stategraph applies after the comparison.
    apply: bool,
    /// Whether modules changed (`init` first).
    init: bool,
}

fn step(what: &'static str) -> Step {
    Step {
        what,
        edits: Vec::new(),
        args: Vec::new(),
        env: Vec::new(),
        apply: true,
        init: false,
    }
}

impl Step {
    fn write(mut self, file: &'static str, text: impl Into<String>) -> Step {
        self.edits.push(Edit::Write(file, text.into()));
        self
    }
    fn replace(mut self, file: &'static str, from: &'static str, to: &'static str) -> Step {
        self.edits.push(Edit::Replace(file, from, to));
        self
    }
    fn remove(mut self, file: &'static str) -> Step {
        self.edits.push(Edit::Remove(file));
        self
    }
    fn args(mut self, args: &[&str]) -> Step {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    fn env(mut self, key: &str, value: &str) -> Step {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    fn plan_only(mut self) -> Step {
        self.apply = false;
        self
    }
    fn init(mut self) -> Step {
        self.init = true;
        self
    }
}

/// What a plan says, as compared: the resource headers (`# ADDR will be
/// created`), the output changes, the totals line and the exit code.
#[derive(Debug, PartialEq, Eq)]
struct Planned {
    code: Option<i32>,
    resources: BTreeSet<String>,
    outputs: BTreeSet<String>,
    totals: String,
}

impl Planned {
    fn read(code: Option<i32>, stdout: &str) -> Planned {
        let mut resources = BTreeSet::new();
        let mut outputs = BTreeSet::new();
        let mut totals = String::new();
        let mut in_outputs = false;
        for line in stdout.lines() {
            if line.starts_with("Changes to Outputs:") {
                in_outputs = true;
                continue;
            }
            if in_outputs {
                let mut chars = line.chars();
                let symbol = (chars.next(), chars.next(), chars.next(), chars.next());
                match symbol {
                    (Some(' '), Some(' '), Some('+' | '~' | '-'), Some(' ')) => {
                        // Terraform aligns the names of the outputs it shows.
                        outputs.insert(line.split_whitespace().collect::<Vec<_>>().join(" "));
                        continue;
                    }
                    _ if line.trim().is_empty() => in_outputs = false,
                    _ => continue,
                }
            }
            let trimmed = line.trim_start();
            if line.starts_with("  # ") && !trimmed.starts_with("# (") {
                resources.insert(trimmed.to_owned());
            } else if line.starts_with("Plan: ") || line.starts_with("No changes.") {
                totals = line.trim().to_owned();
            }
        }
        Planned {
            code,
            resources,
            outputs,
            totals,
        }
    }

    fn describe(&self, other: &Planned) -> String {
        let mut out = Vec::new();
        if self.code != other.code {
            out.push(format!(
                "exit code {:?}, terraform {:?}",
                self.code, other.code
            ));
        }
        for r in self.resources.difference(&other.resources) {
            out.push(format!("only stategraph: {r}"));
        }
        for r in other.resources.difference(&self.resources) {
            out.push(format!("only terraform: {r}"));
        }
        for o in self.outputs.difference(&other.outputs) {
            out.push(format!("only stategraph (output): {o}"));
        }
        for o in other.outputs.difference(&self.outputs) {
            out.push(format!("only terraform (output): {o}"));
        }
        if self.totals != other.totals {
            out.push(format!(
                "totals {:?}, terraform {:?}",
                self.totals, other.totals
            ));
        }
        out.join("; ")
    }
}

/// What one configuration's run found.
#[derive(Default)]
struct Tally {
    comparisons: usize,
    mismatches: Vec<String>,
    fallbacks: Vec<String>,
    /// Plans `plan -verify` found equal to terraform's.
    verified: usize,
}

/// Runs the script `steps` on `fixtures/corpus/NAME`; prints the summary
/// line and fails on any mismatch.
fn run_corpus(name: &str, steps: Vec<Step>) {
    let db = test_db();
    let wd = TfWorkdir::from_fixture(&format!("../corpus/{name}"));
    let check = TfWorkdir::empty();
    let mut tally = Tally::default();
    sg(&db, &wd, &["init", "-no-color"], &[]);
    for (i, step) in steps.iter().enumerate() {
        for edit in &step.edits {
            apply_edit(&wd, edit);
        }
        if step.init {
            sg(&db, &wd, &["init", "-no-color"], &[]);
        }
        let label = format!("{name} #{i} {}", step.what);
        mirror(&wd, &check, i == 0 || step.init);

        // The plans, side by side.
        let mut args = vec!["plan", "-detailed-exitcode", "-no-color"];
        args.extend(step.args.iter().map(String::as_str));
        // `plan -verify` runs too: a difference it finds exits 1, a
        // mismatch of the exit code.
        let out = sg_tf(&db, &wd, STATE, &args)
            .env("STATEGRAPH_DISCOVERY_ORACLE", "0")
            .env("STATEGRAPH_VERIFY", "1")
            .envs(step.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        if stderr.contains("terraform plans the same") {
            tally.verified += 1;
        }
        if let Some(why) = stderr
            .lines()
            .find_map(|l| l.split_once("plan without refresh: ").map(|(_, why)| why))
        {
            tally
                .fallbacks
                .push(format!("{label}: {}", why.trim_end_matches(')')));
        }
        let ours = Planned::read(out.status.code(), &stdout);
        let theirs = terraform_plan(&db, &check, i > 0, &args[1..], &step.env);
        tally.comparisons += 1;
        compare(
            &mut tally,
            &label,
            &ours,
            &theirs,
            &format!("{stdout}{stderr}"),
        );
        if !step.apply {
            continue;
        }

        // Applied by stategraph, nothing is left for terraform to do.
        let mut args = vec!["apply", "-auto-approve", "-no-color"];
        args.extend(step.args.iter().map(String::as_str));
        sg(&db, &wd, &args, &step.env);
        let after: Vec<&str> = step
            .args
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with("-replace"))
            .collect();
        let mut check_args = vec!["-detailed-exitcode", "-no-color"];
        check_args.extend(after);
        let left = terraform_plan(&db, &check, true, &check_args, &step.env);
        let none = Planned {
            code: Some(0),
            resources: BTreeSet::new(),
            outputs: BTreeSet::new(),
            totals: left.totals.clone(),
        };
        tally.comparisons += 1;
        compare(
            &mut tally,
            &format!("{label} (after apply)"),
            &none,
            &left,
            "",
        );
    }
    println!(
        "corpus {name}: {} comparisons with terraform, {} mismatches, {} full-plan fallbacks \
         in {} plans, {} plans agreeing under -verify",
        tally.comparisons,
        tally.mismatches.len(),
        tally.fallbacks.len(),
        steps.len(),
        tally.verified
    );
    for f in &tally.fallbacks {
        println!("  full-plan fallback: {f}");
    }
    assert!(
        tally.mismatches.is_empty(),
        "corpus {name}: {} of {} comparisons differ from terraform:\n{}",
        tally.mismatches.len(),
        tally.comparisons,
        tally.mismatches.join("\n\n")
    );
}

/// Records a difference between `ours` and `theirs` in `tally`.
fn compare(tally: &mut Tally, label: &str, ours: &Planned, theirs: &Planned, shown: &str) {
    if ours == theirs {
        return;
    }
    let what = format!("{label}: {}", ours.describe(theirs));
    tally.mismatches.push(format!("{what}\n{shown}"));
}

/// `stategraph --state corpus ARGS` in `wd` with `env`, asserting success.
fn sg(db: &TestDb, wd: &TfWorkdir, args: &[&str], env: &[(String, String)]) {
    let out = sg_tf(db, wd, STATE, args)
        .env("STATEGRAPH_DISCOVERY_ORACLE", "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_ok(&format!("stategraph {args:?}"), &out);
}

fn apply_edit(wd: &TfWorkdir, edit: &Edit) {
    match edit {
        Edit::Write(file, text) => {
            wd.write_file(file, text);
        }
        Edit::Replace(file, from, to) => {
            let path = wd.path().join(file);
            let was = std::fs::read_to_string(&path).unwrap();
            assert!(
                was.contains(from),
                "corpus script: {file} does not contain {from:?}"
            );
            std::fs::write(&path, was.replacen(from, to, 1)).unwrap();
        }
        Edit::Remove(file) => std::fs::remove_file(wd.path().join(file)).unwrap(),
    }
}

/// Makes `check`'s configuration files those of `wd` (and runs terraform's
/// `init` there when `init`).
fn mirror(wd: &TfWorkdir, check: &TfWorkdir, init: bool) {
    for f in config_files(check.path()) {
        std::fs::remove_file(check.path().join(f)).unwrap();
    }
    for f in config_files(wd.path()) {
        let target = check.path().join(&f);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(wd.path().join(&f), target).unwrap();
    }
    if init {
        check.terraform(&["init", "-no-color"]);
    }
}

/// The configuration's files under `dir` (relative): everything but
/// terraform's and the harness's own.
fn config_files(dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with("terraform.tfstate") {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else if name != "cli.tfrc" && !name.contains("zzzz_") {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Terraform's own `plan ARGS` in `check` on the state stategraph stored
/// (none when `!stored`).
fn terraform_plan(
    db: &TestDb,
    check: &TfWorkdir,
    stored: bool,
    args: &[&str],
    env: &[(String, String)],
) -> Planned {
    let _ = std::fs::remove_file(check.state_path());
    if stored {
        let pulled = sg_in(db, check, STATE, &["state", "pull"]);
        assert_ok("state pull", &pulled);
        std::fs::write(check.state_path(), &pulled.stdout).unwrap();
    }
    let mut all = vec!["plan"];
    all.extend(args);
    let out = check
        .command(&all)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    Planned::read(out.status.code(), &text(&out.stdout))
}

#[test]
fn network() {
    let flow_log_var = "variable \"flow_logs\" {\n  type    = bool\n  default = false\n}";
    run_corpus(
        "network",
        vec![
            step("first apply"),
            step("nothing changed"),
            step("whitespace and a comment")
                .replace("main.tf", "locals {", "# the team's locals\n\n\nlocals  {"),
            step("a tag from -var").args(&["-var=owner=platform"]),
            step("the same tag from TF_VAR_").env("TF_VAR_owner", "platform"),
            step("back to the default tag"),
            step("a third availability zone in tfvars").write(
                "terraform.tfvars",
                "azs = [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]\n",
            ),
            step("a single NAT gateway")
                .write(
                    "terraform.tfvars",
                    "azs = [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]\n\
                     single_nat_gateway = true\n",
                ),
            step("an endpoint added to the map").replace(
                "variables.tf",
                "ecr = { type = \"Interface\" }",
                "ecr = { type = \"Interface\" }\n    dynamodb = { type = \"Gateway\" }",
            ),
            step("an endpoint disabled").replace(
                "variables.tf",
                "s3  = { type = \"Gateway\" }",
                "s3  = { type = \"Gateway\", enabled = false }",
            ),
            step("flow logs on (a module count from 0 to 1)").replace(
                "variables.tf",
                flow_log_var,
                "variable \"flow_logs\" {\n  type    = bool\n  default = true\n}",
            ),
            step("a local read by the module's locals").replace(
                "modules/vpc/main.tf",
                "merge({ Name = var.name }, var.tags)",
                "merge({ Name = var.name, managed = \"stategraph\" }, var.tags)",
            ),
            step("a nested module added to the VPC module")
                .write(
                    "modules/dhcp/main.tf",
                    "variable \"vpc_id\" {\n  type = string\n}\n\n\
                     variable \"domain\" {\n  type = string\n}\n\n\
                     resource \"terraform_data\" \"options\" {\n  input = { domain = var.domain }\n}\n\n\
                     resource \"terraform_data\" \"association\" {\n  \
                     input = { vpc = var.vpc_id, options = terraform_data.options.id }\n}\n",
                )
                .write(
                    "modules/vpc/dhcp.tf",
                    "module \"dhcp\" {\n  source = \"../dhcp\"\n\n  \
                     vpc_id = terraform_data.vpc.id\n  domain = \"${var.name}.internal\"\n}\n",
                )
                .init(),
            step("an edit in the nested module").replace(
                "modules/dhcp/main.tf",
                "input = { domain = var.domain }",
                "input = { domain = var.domain, servers = [\"AmazonProvidedDNS\"] }",
            ),
            step("a resource and an output added").write(
                "bastion.tf",
                "resource \"terraform_data\" \"bastion\" {\n  input = module.vpc.public_subnets[0]\n}\n\n\
                 output \"bastion_subnet\" {\n  value = terraform_data.bastion.output\n}\n",
            ),
            step("a resource renamed with a moved block")
                .replace("main.tf", "resource \"terraform_data\" \"dns\" {", "resource \"terraform_data\" \"dns_zone\" {")
                .replace("outputs.tf", "terraform_data.dns.output", "terraform_data.dns_zone.output")
                .write(
                    "moved.tf",
                    "moved {\n  from = terraform_data.dns\n  to   = terraform_data.dns_zone\n}\n",
                ),
            step("-replace of one NAT gateway")
                .args(&["-replace=module.vpc.terraform_data.nat[0]"]),
            step("-target of the endpoints with a VPC change pending")
                .replace("main.tf", "env = \"prod\"", "env = \"production\"")
                .args(&["-target=module.endpoints"]),
            step("the rest of that change"),
            step("-refresh-only").args(&["-refresh-only"]).plan_only(),
            step("NAT gateways off (count to 0, create_before_destroy)")
                .write("terraform.tfvars", "azs = [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]\nenable_nat_gateway = false\n"),
            step("a resource removed from state only with a removed block")
                .remove("bastion.tf")
                .write(
                    "bastion.tf",
                    "removed {\n  from = terraform_data.bastion\n\n  lifecycle {\n    destroy = false\n  }\n}\n",
                ),
            step("-destroy, planned").args(&["-destroy"]).plan_only(),
            step("-destroy").args(&["-destroy"]),
        ],
    );
}

#[test]
fn storage() {
    run_corpus(
        "storage",
        vec![
            step("first apply"),
            step("nothing changed"),
            step("a tag from tfvars").write("prod.auto.tfvars", "cost_center = \"cc-200\"\n"),
            step("one bucket's versioning on").replace(
                "variables.tf",
                "logs   = { expiration_days = 30 }",
                "logs   = { expiration_days = 30, versioning = true }",
            ),
            step("one bucket's lifecycle changed").replace(
                "variables.tf",
                "expiration_days = 365",
                "expiration_days = 400",
            ),
            step("a bucket added (a module for_each key)").replace(
                "variables.tf",
                "backup = {",
                "media  = { public = true }\n    backup = {",
            ),
            step("a bucket removed").replace(
                "variables.tf",
                "assets = { versioning = true, public = true }\n",
                "",
            ),
            step("the data source's value changed").replace(
                "shared.tfstate.json",
                "key/one",
                "key/two",
            ),
            step("depends_on added").replace(
                "main.tf",
                "resource \"terraform_data\" \"inventory\" {\n",
                "resource \"terraform_data\" \"inventory\" {\n  depends_on = [module.bucket]\n",
            ),
            step("a module by conditional count nested in the bucket module")
                .write(
                    "modules/notify/main.tf",
                    "variable \"bucket\" {\n  type = string\n}\n\n\
                     resource \"terraform_data\" \"topic\" {\n  input = \"${var.bucket}-events\"\n}\n\n\
                     resource \"terraform_data\" \"subscription\" {\n  \
                     input = terraform_data.topic.id\n}\n",
                )
                .write(
                    "modules/bucket/notify.tf",
                    "module \"notify\" {\n  source = \"../notify\"\n  \
                     count  = var.versioning ? 1 : 0\n\n  bucket = terraform_data.bucket.id\n}\n",
                )
                .init(),
            step("that nested module's count changed in one bucket").replace(
                "variables.tf",
                "logs   = { expiration_days = 30, versioning = true }",
                "logs   = { expiration_days = 30 }",
            ),
            step("a resource imported with an import block").write(
                "import.tf",
                "import {\n  to = terraform_data.legacy\n  id = \"legacy-bucket\"\n}\n\n\
                 resource \"terraform_data\" \"legacy\" {\n}\n",
            ),
            step("an edit inside the bucket module").replace(
                "modules/bucket/main.tf",
                "status = \"Enabled\"",
                "status = \"Enabled\", mfa_delete = false",
            ),
            step("-target of one bucket module instance with another change pending")
                .replace("main.tf", "stack = \"storage\"", "stack = \"storage-v2\"")
                .args(&["-target=module.bucket[\"logs\"]"]),
            step("the rest of that change"),
            step("-refresh-only").args(&["-refresh-only"]).plan_only(),
            step("outputs added and one removed")
                .replace("outputs.tf", "output \"inventory\" {", "output \"bucket_names\" {\n  value = keys(module.bucket)\n}\n\noutput \"inventory_list\" {"),
            step("-destroy, planned").args(&["-destroy"]).plan_only(),
        ],
    );
}

#[test]
fn iam() {
    run_corpus(
        "iam",
        vec![
            step("first apply"),
            step("nothing changed"),
            step("a role added to the list").replace(
                "variables.tf",
                "  ]\n}\n\nvariable \"policies\"",
                "    { name = \"auditor\", service = \"lambda.amazonaws.com\", policies = [\"read\"] },\n  ]\n}\n\nvariable \"policies\"",
            ),
            step("a policy attached to a role (the flattened for_each)").replace(
                "variables.tf",
                "policies = [\"read\"], profile = true",
                "policies = [\"read\", \"write\"], profile = true",
            ),
            step("a role's trust changed (replace_triggered_by replaces its profile)")
                .replace("variables.tf", "ec2.amazonaws.com", "ecs-tasks.amazonaws.com"),
            step("a policy document changed").replace(
                "variables.tf",
                "write = [\"s3:PutObject\"]",
                "write = [\"s3:PutObject\", \"s3:DeleteObject\"]",
            ),
            step("the path of every role from TF_VAR_").env("TF_VAR_path", "/service/"),
            step("the CI user module created (module count 0 to 1)")
                .args(&["-var=create_ci_user=true"]),
            step("an edit inside the user module")
                .replace("modules/user/main.tf", "input = terraform_data.user.id", "input = \"${terraform_data.user.id}:v2\"")
                .args(&["-var=create_ci_user=true"]),
            step("a role renamed with a moved block")
                .replace("variables.tf", "name = \"deployer\"", "name = \"release\"")
                .write(
                    "moved.tf",
                    "moved {\n  from = terraform_data.role[\"deployer\"]\n  to   = terraform_data.role[\"release\"]\n}\n",
                )
                .args(&["-var=create_ci_user=true"]),
            step("a precondition that fails").args(&["-var=min_password_length=6", "-var=create_ci_user=true"]).plan_only(),
            step("the CI user module removed (module count 1 to 0)"),
            step("-replace of a role").args(&["-replace=terraform_data.role[\"app\"]"]),
            step("-destroy, planned").args(&["-destroy"]).plan_only(),
        ],
    );
}
