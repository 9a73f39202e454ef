//! The README's CI guide cannot rot: the workflows it includes
//! (`examples/ci/github-actions.yml`, `examples/ci/gitlab-ci.yml`) are read
//! here, their shell steps extracted and run in order, job by job, with
//! bash as the runners run them (`-eo pipefail`), against a real PostgreSQL
//! (the test's database URL as the secret), the real terraform and the
//! `chain` configuration in a git checkout whose origin is the CI's
//! repository. Each job runs in a fresh clone, as on a runner.
//!
//! Steps that are not shell (`uses:`: checkout, setup-terraform, artifacts)
//! are the test's own setup; "Install stategraph" is skipped: the test puts
//! the binary cargo built on PATH. Every step runs even after one failed, so
//! that one report names every failing step.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::terraform::{path_with_tools, tf_env};
use crate::common::*;

/// One shell step of a workflow.
#[derive(Debug)]
struct Step {
    job: String,
    name: String,
    script: String,
}

/// What running one step gave.
struct Ran {
    step: Step,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// `KEY: VALUE` lines of the top-level mapping `section` (`env:`,
/// `variables:`), values unquoted.
fn top_level_map(yaml: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in yaml.lines() {
        if indent(line) == 0 && !line.trim().is_empty() {
            inside = line.trim_end() == format!("{section}:");
            continue;
        }
        let entry = line.trim();
        if !inside || entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (key, value) = entry
            .split_once(": ")
            .unwrap_or_else(|| panic!("`{section}:` holds a line the test cannot read: {line}"));
        out.push((key.to_owned(), value.trim_matches('"').to_owned()));
    }
    out
}

/// The `run:` steps of a GitHub Actions workflow, job by job, in order.
fn github_steps(yaml: &str) -> Vec<Step> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut steps = Vec::new();
    let (mut in_jobs, mut job, mut name) = (false, String::new(), String::new());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if indent(line) == 0 && !line.trim().is_empty() {
            in_jobs = line.trim_end() == "jobs:";
            continue;
        }
        if !in_jobs {
            continue;
        }
        let entry = line.trim_start();
        if indent(line) == 2 && entry.ends_with(':') {
            job = entry.trim_end_matches(':').to_owned();
            continue;
        }
        let key = entry.trim_start_matches("- ");
        if entry.starts_with("- ") {
            name.clear();
        }
        if let Some(n) = key.strip_prefix("name: ") {
            name = n.to_owned();
        } else if let Some(value) = key.strip_prefix("run:") {
            let value = value.trim();
            let script = if value == "|" {
                let mut block = Vec::new();
                while i < lines.len()
                    && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line))
                {
                    block.push(lines[i]);
                    i += 1;
                }
                let cut = block
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| indent(l))
                    .min()
                    .unwrap_or(0);
                block
                    .iter()
                    .map(|l| l.get(cut..).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                value.to_owned()
            };
            steps.push(Step {
                job: job.clone(),
                name: name.clone(),
                script,
            });
        }
    }
    steps
}

/// The `script:` lines of a GitLab CI file, one step per line, job by job.
fn gitlab_steps(yaml: &str) -> Vec<Step> {
    const NOT_JOBS: &[&str] = &["image", "variables", "stages", "default", "include"];
    let mut steps = Vec::new();
    let (mut job, mut in_script) = (None::<String>, false);
    for line in yaml.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) == 0 {
            let key = line.split(':').next().unwrap_or_default();
            job = (!key.starts_with('.') && !NOT_JOBS.contains(&key)).then(|| key.to_owned());
            in_script = false;
            continue;
        }
        let Some(job) = &job else { continue };
        if indent(line) == 2 {
            in_script = line.trim() == "script:";
            continue;
        }
        if let (true, Some(cmd)) = (in_script, line.trim().strip_prefix("- ")) {
            steps.push(Step {
                job: job.clone(),
                name: cmd.to_owned(),
                script: cmd.to_owned(),
            });
        }
    }
    steps
}

/// `git ARGS` in `dir`, asserting success.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is needed for these tests (apt-get install git)");
    assert_ok(&format!("git {args:?}"), &out);
}

/// The repository: the `chain` configuration committed on `main`, its
/// origin the CI's repository.
fn repository(origin_url: &str) -> TfWorkdir {
    let repo = TfWorkdir::from_fixture("chain");
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "infra"]);
    git(repo.path(), &["remote", "add", "origin", origin_url]);
    repo
}

/// A fresh checkout of `repo` for one job (what `actions/checkout` gives).
fn checkout(repo: &TfWorkdir, origin_url: &str) -> TfWorkdir {
    let wd = TfWorkdir::empty();
    git(wd.path(), &["init", "-q"]);
    git(
        wd.path(),
        &["fetch", "-q", repo.path().to_str().unwrap(), "main"],
    );
    git(
        wd.path(),
        &["checkout", "-q", "-f", "-B", "main", "FETCH_HEAD"],
    );
    git(wd.path(), &["remote", "add", "origin", origin_url]);
    wd
}

/// Runs `steps` of `job` in `wd` with `env` (the workflow's and the
/// runner's variables), as the runner runs a step.
fn run_job(job: &str, steps: &[Step], wd: &TfWorkdir, env: &[(String, String)]) -> Vec<Ran> {
    let path = path_with_tools();
    let mut out = Vec::new();
    for step in steps.iter().filter(|s| s.job == job) {
        if step.name == "Install stategraph" {
            continue;
        }
        let mut cmd = Command::new("bash");
        cmd.env_clear();
        tf_env(&mut cmd, wd.cli_config());
        cmd.env("PATH", &path)
            .env("HOME", wd.path())
            .env("USER", "runner")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "--noprofile",
                "--norc",
                "-eo",
                "pipefail",
                "-c",
                &step.script,
            ])
            .current_dir(wd.path());
        let ran = cmd.output().expect("bash runs the step");
        out.push(Ran {
            step: Step {
                job: step.job.clone(),
                name: step.name.clone(),
                script: step.script.clone(),
            },
            code: ran.status.code(),
            stdout: text(&ran.stdout),
            stderr: text(&ran.stderr),
        });
    }
    assert!(
        !out.is_empty(),
        "the workflow has no shell step in job {job}"
    );
    // Shown with whatever assertion fails first.
    for failed in failures(&out) {
        eprintln!("{failed}\n");
    }
    out
}

/// Asserts that every step exited 0, naming each one that did not.
fn assert_all_succeeded(ran: &[Ran]) {
    let failed = failures(ran);
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Each step that did not exit 0, with its output.
fn failures(ran: &[Ran]) -> Vec<String> {
    ran.iter()
        .filter(|r| r.code != Some(0))
        .map(|r| {
            format!(
                "job {}, step {:?} exited {:?}:\n$ {}\nstdout:\n{}\nstderr:\n{}",
                r.step.job, r.step.name, r.code, r.step.script, r.stdout, r.stderr
            )
        })
        .collect()
}

/// The workflow's variables with the secret set to the test's database,
/// plus what the runner sets.
fn job_env(
    workflow: &[(String, String)],
    db: &TestDb,
    runner: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = workflow
        .iter()
        .filter(|(k, _)| k != "STATEGRAPH_DATABASE_URL")
        .cloned()
        .collect();
    env.push(("STATEGRAPH_DATABASE_URL".into(), db.url.clone()));
    env.push(("CI".into(), "true".into()));
    env.extend(runner.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// What the plan job left: a plan file, and its JSON planning the whole
/// `chain` configuration (19 instances) for creation.
fn assert_planned(wd: &TfWorkdir, job: &str) {
    assert!(
        wd.path().join("tfplan").is_file(),
        "{job}: no tfplan written"
    );
    let json = std::fs::read_to_string(wd.path().join("tfplan.json")).unwrap_or_default();
    let plan: Value = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!(
            "{job}: tfplan.json is not JSON ({e}): {json:?}; \
                 the `stategraph show -json tfplan` step above says why"
        )
    });
    let creates = plan["resource_changes"].as_array().map(|a| {
        a.iter()
            .filter(|c| c["change"]["actions"] == serde_json::json!(["create"]))
            .count()
    });
    assert_eq!(creates, Some(19), "{job}: {plan}");
}

/// The apply job applied the plan: the state named after the CI's
/// repository holds the 19 instances, and its log names the job.
fn assert_applied(db: &TestDb, ran: &[Ran], state: &str, job_url: &str) {
    let stored = db.psql(&format!(
        "SELECT count(*) FROM instances i JOIN states s ON s.id = i.state_id WHERE s.name = '{state}'"
    ));
    assert_eq!(stored, "19", "state {state} after the apply job");
    let recorded = db.psql(&format!(
        "SELECT t.ci_job FROM transactions t JOIN states s ON s.id = t.state_id \
         WHERE s.name = '{state}' AND t.kind = 'apply'"
    ));
    assert_eq!(
        recorded, job_url,
        "the apply's transaction names the CI job"
    );
    let log = ran
        .iter()
        .find(|r| r.step.script.starts_with("stategraph log"))
        .expect("the workflow shows the log");
    assert!(log.stdout.contains(job_url), "{}", log.stdout);
}

fn which(tool: &str) {
    let found = Command::new("bash")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{tool} is needed to run the CI guide's policy step (apt-get install {tool})"
    );
}

fn read_example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/ci")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The CI's view of one job: its number, and the variables its runner sets.
type Runner<'a> = &'a dyn Fn(u32) -> Vec<(String, String)>;

/// The pipeline as a team meets it: a pull request's plan job (job 1), its
/// merge's apply job creating the state (job 2), then the merge of a change
/// to one branch of `chain`, applied by job 3. Each job in a fresh checkout.
fn pipeline(
    db: &TestDb,
    steps: &[Step],
    origin: &str,
    runner: Runner,
    state: &str,
    url: &dyn Fn(u32) -> String,
) {
    let repo = repository(origin);
    let pr = checkout(&repo, origin);
    let planned = run_job("plan", steps, &pr, &runner(1));
    let merged = checkout(&repo, origin);
    let applied = run_job("apply", steps, &merged, &runner(2));
    assert_applied(db, &applied, state, &url(2));

    // A change to branch a only: the next merge's job applies its cone.
    let main_tf = repo.path().join("main.tf");
    let text = std::fs::read_to_string(&main_tf).unwrap();
    let changed = text.replace(
        r#"default = { a = "1", b = "1", c = "1" }"#,
        r#"default = { a = "2", b = "1", c = "1" }"#,
    );
    assert_ne!(text, changed, "the chain fixture's gen default moved");
    std::fs::write(&main_tf, changed).unwrap();
    git(repo.path(), &["commit", "-q", "-am", "branch a, gen 2"]);
    let next = checkout(&repo, origin);
    let reapplied = run_job("apply", steps, &next, &runner(3));
    assert_eq!(
        input_gen(db, r#"module.branch["a"].terraform_data.l1"#),
        "2"
    );
    assert_eq!(
        input_gen(db, r#"module.branch["b"].terraform_data.l1"#),
        "1"
    );
    let last = db.psql(
        "SELECT ci_job || ' ' || (cone->'write')::text FROM transactions \
         WHERE kind = 'apply' ORDER BY id DESC LIMIT 1",
    );
    assert!(last.starts_with(&format!("{} ", url(3))), "{last}");
    assert!(
        !last.contains(r#"branch[\"b\"]"#),
        "branch b is not in the cone: {last}"
    );

    assert_planned(&pr, "plan");
    assert_planned(&merged, "apply");
    for ran in [&planned, &applied, &reapplied] {
        assert_all_succeeded(ran);
    }
}

#[test]
fn the_github_actions_workflow_plans_checks_and_applies() {
    which("jq");
    let yaml = read_example("github-actions.yml");
    let workflow = top_level_map(&yaml, "env");
    assert!(
        workflow
            .iter()
            .any(|(k, v)| k == "STATEGRAPH_DATABASE_URL" && v.contains("secrets.")),
        "the database URL comes from a secret: {workflow:?}"
    );
    let db = test_db();
    let url = |run: u32| format!("https://github.com/acme/infra/actions/runs/{run}");
    let runner = |run: u32| {
        job_env(
            &workflow,
            &db,
            &[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_SERVER_URL", "https://github.com"),
                ("GITHUB_REPOSITORY", "acme/infra"),
                ("GITHUB_RUN_ID", &run.to_string()),
            ],
        )
    };
    pipeline(
        &db,
        &github_steps(&yaml),
        "https://github.com/acme/infra.git",
        &runner,
        "github.com/acme/infra",
        &url,
    );
}

#[test]
fn the_gitlab_ci_jobs_plan_check_and_apply() {
    which("jq");
    let yaml = read_example("gitlab-ci.yml");
    assert!(
        !yaml.contains("STATEGRAPH_DATABASE_URL:"),
        "the database URL is a masked CI/CD variable, not part of the file"
    );
    let variables = top_level_map(&yaml, "variables");
    let db = test_db();
    let url = |job: u32| format!("https://gitlab.example.com/acme/infra/-/jobs/{job}");
    let runner = |job: u32| {
        job_env(
            &variables,
            &db,
            &[
                ("GITLAB_CI", "true"),
                ("CI_JOB_ID", &job.to_string()),
                ("CI_JOB_URL", &url(job)),
            ],
        )
    };
    pipeline(
        &db,
        &gitlab_steps(&yaml),
        "git@gitlab.example.com:acme/infra.git",
        &runner,
        "gitlab.example.com/acme/infra",
        &url,
    );
}

#[test]
fn the_extractors_read_every_shell_step() {
    let github = github_steps(&read_example("github-actions.yml"));
    let names: Vec<(&str, &str)> = github
        .iter()
        .map(|s| (s.job.as_str(), s.name.as_str()))
        .collect();
    assert!(names.contains(&("plan", "Plan")), "{names:?}");
    assert!(
        names.contains(&("apply", "Apply the checked plan")),
        "{names:?}"
    );
    let plan = github
        .iter()
        .find(|s| s.job == "plan" && s.name == "Plan")
        .unwrap();
    assert_eq!(
        plan.script.lines().collect::<Vec<_>>(),
        [
            "stategraph init -input=false",
            "stategraph plan -input=false -lock-timeout=5m -out=tfplan"
        ]
    );
    let gitlab = gitlab_steps(&read_example("gitlab-ci.yml"));
    assert_eq!(
        gitlab.iter().filter(|s| s.job == "plan").count(),
        4,
        "{gitlab:?}"
    );
    assert_eq!(
        gitlab.iter().filter(|s| s.job == "apply").count(),
        6,
        "{gitlab:?}"
    );
}

#[test]
fn the_readme_shows_the_workflows_as_they_are_tested() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    for name in ["github-actions.yml", "gitlab-ci.yml"] {
        let file = read_example(name);
        assert!(
            readme.contains(&format!("`examples/ci/{name}`:\n\n```yaml\n{file}```")),
            "README.md does not show examples/ci/{name} as it is: copy the file into its ```yaml block"
        );
    }
}
