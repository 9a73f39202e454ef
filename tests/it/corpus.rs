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

use crate::common::terraform::BUILTIN_CLI_CONFIG;
use crate::common::*;

const STATE: &str = "corpus";

/// One edit of the configuration's files.
pub(crate) enum Edit {
    /// `(file, text)`: writes the file.
    Write(&'static str, String),
    /// `(file, from, to)`: replaces `from`, which must be there, by `to`.
    Replace(&'static str, &'static str, &'static str),
    /// Removes the file.
    Remove(&'static str),
}

/// One step of a configuration's script.
pub(crate) struct Step<'a> {
    what: &'static str,
    /// Changes made outside terraform before the plans (drift on the local
    /// API), after the previous apply's check.
    outside: Vec<Box<dyn Fn() + 'a>>,
    edits: Vec<Edit>,
    /// Terraform's flags for the plan and the apply (`-var`, `-target`, ...).
    args: Vec<String>,
    /// Environment of both (`TF_VAR_*`).
    env: Vec<(String, String)>,
    /// Whether stategraph applies after the comparison.
    apply: bool,
    /// Whether modules changed (`init` first).
    init: bool,
    /// Whether stategraph's plan must narrow a module call to the instances
    /// it touches (`None`: either).
    narrowed: Option<bool>,
}

pub(crate) fn step<'a>(what: &'static str) -> Step<'a> {
    Step {
        what,
        outside: Vec::new(),
        edits: Vec::new(),
        args: Vec::new(),
        env: Vec::new(),
        apply: true,
        init: false,
        narrowed: None,
    }
}

impl<'a> Step<'a> {
    /// Runs `change` (outside terraform) before the step's plans.
    pub(crate) fn outside(mut self, change: impl Fn() + 'a) -> Step<'a> {
        self.outside.push(Box::new(change));
        self
    }
    pub(crate) fn write(mut self, file: &'static str, text: impl Into<String>) -> Step<'a> {
        self.edits.push(Edit::Write(file, text.into()));
        self
    }
    pub(crate) fn replace(
        mut self,
        file: &'static str,
        from: &'static str,
        to: &'static str,
    ) -> Step<'a> {
        self.edits.push(Edit::Replace(file, from, to));
        self
    }
    pub(crate) fn remove(mut self, file: &'static str) -> Step<'a> {
        self.edits.push(Edit::Remove(file));
        self
    }
    pub(crate) fn args(mut self, args: &[&str]) -> Step<'a> {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    pub(crate) fn env(mut self, key: &str, value: &str) -> Step<'a> {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    /// Expects stategraph's plan to narrow a module call (or not).
    pub(crate) fn narrowed(mut self, yes: bool) -> Step<'a> {
        self.narrowed = Some(yes);
        self
    }
    pub(crate) fn plan_only(mut self) -> Step<'a> {
        self.apply = false;
        self
    }
    pub(crate) fn init(mut self) -> Step<'a> {
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
    /// Plans that narrowed a module call to the instances they touch.
    narrowed: usize,
}

/// How a configuration of `fixtures/corpus/` is run.
pub(crate) struct Setup {
    /// The directory under `fixtures/corpus/`.
    pub name: &'static str,
    /// Terraform's CLI configuration (where providers are installed from).
    pub cli_config: String,
    /// Environment of every command (`TF_VAR_*` the configuration needs).
    pub env: Vec<(String, String)>,
    /// Whether every plan runs with `STATEGRAPH_VERIFY=1` (two more
    /// terraform plans of the whole configuration per step).
    pub verify: bool,
    /// Whether stategraph applies the plan it was compared on (`plan -out`,
    /// then `apply FILE`: one terraform command fewer per step) instead of
    /// planning again in `apply`.
    pub saved_plans: bool,
}

impl Setup {
    /// A configuration of built-in resources only, every plan verified, each
    /// apply planning again.
    fn builtin(name: &'static str) -> Setup {
        Setup {
            name,
            cli_config: BUILTIN_CLI_CONFIG.to_owned(),
            env: Vec::new(),
            verify: true,
            saved_plans: false,
        }
    }
}

/// Terraform's check that an apply left nothing to do, run beside the next
/// step's plans (on the same stored state: plans change nothing).
struct AfterApply {
    label: String,
    /// Index of the check directory holding that step's configuration.
    dir: usize,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Runs the script `steps` on `fixtures/corpus/NAME` with built-in
/// providers; prints the summary line and fails on any mismatch.
fn run_corpus(name: &'static str, steps: Vec<Step<'_>>) {
    run(Setup::builtin(name), steps)
}

/// Runs the script `steps` as `setup` says; prints the summary line and
/// fails on any mismatch.
///
/// Each step's terraform plan runs in a check directory beside stategraph's
/// plan, with the previous apply's check (in the other check directory,
/// which still holds the previous configuration) beside them too: all
/// three read the same stored state.
pub(crate) fn run(setup: Setup, steps: Vec<Step<'_>>) {
    let name = setup.name;
    let db = test_db();
    let wd =
        TfWorkdir::from_fixture_with_cli_config(&format!("../corpus/{name}"), &setup.cli_config);
    let checks = [
        TfWorkdir::empty_with_cli_config(&setup.cli_config),
        TfWorkdir::empty_with_cli_config(&setup.cli_config),
    ];
    // Whether a check directory must run `init` (modules changed since).
    let mut uninitialized = [true, true];
    let plan_file = wd.path().join(".corpus.sgplan");
    let plan_file = plan_file.to_string_lossy().into_owned();
    let mut tally = Tally::default();
    let mut pending: Option<AfterApply> = None;
    sg(&db, &wd, &["init", "-no-color"], &setup.env);
    for (i, step) in steps.iter().enumerate() {
        if !step.outside.is_empty() {
            // The previous apply's check first: terraform's plan refreshes,
            // and would see this step's drift.
            if let Some(a) = pending.take() {
                check_pending(&db, &checks, &mut tally, &a);
            }
            for change in &step.outside {
                change();
            }
        }
        for edit in &step.edits {
            apply_edit(&wd, edit);
        }
        if step.init {
            sg(&db, &wd, &["init", "-no-color"], &setup.env);
            uninitialized = [true, true];
        }
        let label = format!("{name} #{i} {}", step.what);
        let started = std::time::Instant::now();
        let d = i % 2;
        mirror(&wd, &checks[d], uninitialized[d], &setup.env);
        uninitialized[d] = false;
        let env: Vec<(String, String)> = setup.env.iter().chain(&step.env).cloned().collect();
        let stored = (i > 0).then(|| pull(&db, &checks[d]));

        // The plans, side by side.
        let mut args = vec!["plan", "-detailed-exitcode", "-no-color"];
        args.extend(step.args.iter().map(String::as_str));
        let saved = setup.saved_plans && step.apply;
        let mut ours_args = args.clone();
        let out_flag = format!("-out={plan_file}");
        if saved {
            ours_args.push(&out_flag);
        }
        let after = pending.take();
        let (out, theirs, left) = std::thread::scope(|s| {
            let ours = s.spawn(|| {
                // `plan -verify` runs too: a difference it finds exits 1, a
                // mismatch of the exit code.
                sg_tf(&db, &wd, STATE, &ours_args)
                    .env("STATEGRAPH_DISCOVERY_ORACLE", "0")
                    .env("STATEGRAPH_VERIFY", if setup.verify { "1" } else { "0" })
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap()
            });
            let theirs =
                s.spawn(|| terraform_plan(&checks[d], stored.as_deref(), &args[1..], &env));
            let left = after.as_ref().map(|a| {
                s.spawn(|| {
                    let mut args = vec!["-detailed-exitcode", "-no-color"];
                    args.extend(a.args.iter().map(String::as_str));
                    terraform_plan(&checks[a.dir], stored.as_deref(), &args, &a.env)
                })
            });
            (
                ours.join().unwrap(),
                theirs.join().unwrap(),
                left.map(|l| l.join().unwrap()),
            )
        });
        if let (Some(a), Some(left)) = (&after, &left) {
            check_after_apply(&mut tally, &a.label, &a.args, left);
        }
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        if stderr.contains("terraform plans the same") {
            tally.verified += 1;
        }
        let narrowed = stderr.contains("Narrowing the module calls terraform expands");
        tally.narrowed += usize::from(narrowed);
        // With the partial state off (`STATEGRAPH_PARTIAL_STATE=0`), nothing is narrowed.
        let partial = std::env::var("STATEGRAPH_PARTIAL_STATE").as_deref() != Ok("0");
        if step
            .narrowed
            .is_some_and(|expected| (expected && partial) != narrowed)
        {
            tally.mismatches.push(format!(
                "{label}: the plan {} a module call, expected otherwise:\n{stderr}",
                if narrowed {
                    "narrowed"
                } else {
                    "did not narrow"
                }
            ));
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
        tally.comparisons += 1;
        compare(
            &mut tally,
            &label,
            &ours,
            &theirs,
            &format!("{stdout}{stderr}"),
        );
        if !step.apply {
            println!("  {label}: {:.0} s", started.elapsed().as_secs_f64());
            continue;
        }

        // Applied by stategraph, nothing is left for terraform to do.
        if saved {
            sg(&db, &wd, &["apply", "-no-color", &plan_file], &env);
        } else {
            let mut args = vec!["apply", "-auto-approve", "-no-color"];
            args.extend(step.args.iter().map(String::as_str));
            sg(&db, &wd, &args, &env);
        }
        pending = Some(AfterApply {
            label: format!("{label} (after apply)"),
            dir: d,
            args: step
                .args
                .iter()
                .filter(|a| !a.starts_with("-replace"))
                .cloned()
                .collect(),
            env,
        });
        println!("  {label}: {:.0} s", started.elapsed().as_secs_f64());
    }
    if let Some(a) = pending {
        check_pending(&db, &checks, &mut tally, &a);
    }
    println!(
        "corpus {name}: {} comparisons with terraform, {} mismatches, {} full-plan fallbacks \
         in {} plans, {} plans agreeing under -verify, {} narrowing a module call",
        tally.comparisons,
        tally.mismatches.len(),
        tally.fallbacks.len(),
        steps.len(),
        tally.verified,
        tally.narrowed
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

/// Runs the check `a` of an apply on the stored state, alone.
fn check_pending(db: &TestDb, checks: &[TfWorkdir; 2], tally: &mut Tally, a: &AfterApply) {
    let stored = pull(db, &checks[a.dir]);
    let mut args = vec!["-detailed-exitcode", "-no-color"];
    args.extend(a.args.iter().map(String::as_str));
    let left = terraform_plan(&checks[a.dir], Some(&stored), &args, &a.env);
    check_after_apply(tally, &a.label, &a.args, &left);
}

/// Counts terraform's plan after an apply (with the apply's `args`): it
/// must plan nothing.
fn check_after_apply(tally: &mut Tally, label: &str, args: &[String], left: &Planned) {
    // After an apply of `-refresh-only`, terraform 1.11's own `plan
    // -refresh-only -detailed-exitcode` says "No changes." and exits 2
    // (seen here after terraform's own refresh-only apply on moto, data
    // sources in the configuration): its line is what counts there.
    let refresh_only = args.iter().any(|a| a == "-refresh-only");
    let no_changes = left.totals.starts_with("No changes.");
    let none = Planned {
        code: if refresh_only { left.code } else { Some(0) },
        resources: BTreeSet::new(),
        outputs: BTreeSet::new(),
        totals: if refresh_only && !no_changes {
            "No changes.".to_owned()
        } else {
            left.totals.clone()
        },
    };
    tally.comparisons += 1;
    compare(tally, label, &none, left, "");
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

/// The stored state, as `stategraph state pull` writes it (run in `wd`).
fn pull(db: &TestDb, wd: &TfWorkdir) -> Vec<u8> {
    let pulled = sg_in(db, wd, STATE, &["state", "pull"]);
    assert_ok("state pull", &pulled);
    pulled.stdout
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
fn mirror(wd: &TfWorkdir, check: &TfWorkdir, init: bool, env: &[(String, String)]) {
    for f in config_files(check.path()) {
        std::fs::remove_file(check.path().join(f)).unwrap();
    }
    for f in config_files(wd.path()) {
        let target = check.path().join(&f);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(wd.path().join(&f), target).unwrap();
    }
    if init {
        let out = check
            .command(&["init", "-no-color"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert_ok("terraform init", &out);
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

/// Terraform's own `plan ARGS` in `check` on the state `stored` (none
/// when `None`).
fn terraform_plan(
    check: &TfWorkdir,
    stored: Option<&[u8]>,
    args: &[&str],
    env: &[(String, String)],
) -> Planned {
    let _ = std::fs::remove_file(check.state_path());
    if let Some(state) = stored {
        std::fs::write(check.state_path(), state).unwrap();
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
fn teams() {
    // A `for_each` module call the root reads by one literal key: plans of
    // some teams are given those teams (and the one named) alone.
    run_corpus(
        "teams",
        vec![
            step("first apply").narrowed(false),
            step("nothing changed"),
            step("one team's services grow").replace("variables.tf", "payments = 3", "payments = 4").narrowed(true),
            step("one team's tier from tfvars")
                .write("tiers.auto.tfvars", "tiers = { search = \"critical\" }\n")
                .narrowed(true),
            step("the team the root names changes").replace("variables.tf", "platform = 2", "platform = 1").narrowed(true),
            step("a root resource reading no team").write(
                "dns.tf",
                "resource \"terraform_data\" \"dns\" {\n  input = \"${local.prefix}.example\"\n}\n",
            ).narrowed(true),
            step("a team added (a for_each key)").replace(
                "variables.tf",
                "\"search\"]",
                "\"search\", \"ml\"]",
            ),
            step("a team removed").replace("variables.tf", "\"payments\", ", ""),
            step("an edit inside the team module").replace(
                "modules/team/main.tf",
                "tier = var.tier }",
                "tier = var.tier, audit = true }",
            ),
            step("-target of one team with another change pending")
                .replace("variables.tf", "platform = 1", "platform = 2")
                .write("tiers.auto.tfvars", "tiers = { search = \"standard\" }\n")
                .args(&["-target=module.team[\"search\"]"])
                .narrowed(false),
            step("the rest of that change").narrowed(true),
            step("an output over every team, then one team changed")
                .write("names.tf", "output \"team_names\" {\n  value = keys(module.team)\n}\n")
                .write("tiers.auto.tfvars", "tiers = { ml = \"critical\" }\n")
                .narrowed(false),
            step("-refresh-only").args(&["-refresh-only"]).plan_only(),
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
