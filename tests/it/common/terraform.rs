//! Running the real terraform binary from integration tests.
//!
//! Owns: finding terraform, the hermetic environment every terraform (or
//! stategraph) child process of a test gets, private copies of the fixture
//! configurations under `fixtures/tf/`, and `produce_state`, which turns a
//! fixture into a real terraform-written state (including the extra steps some
//! fixtures need: tainting, a half-failed replacement leaving a deposed
//! object). It must not skip anything silently: a missing tool is a test
//! failure with a message saying how to install or point at it.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Environment variable naming the terraform binary to use.
pub const TERRAFORM_ENV: &str = "STATEGRAPH_TERRAFORM";
/// Environment variable naming the offline terraform provider mirror.
pub const PLUGIN_MIRROR_ENV: &str = "STATEGRAPH_TF_PLUGIN_MIRROR";
/// Where machine images usually put the provider mirror, probed in order.
pub const PLUGIN_MIRROR_CANDIDATES: &[&str] = &[
    "/opt/tf-plugins",
    "/usr/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
];

/// `PATH` with the stategraph under test and [`terraform_bin`]'s directory
/// first: for scripts that run `stategraph` and `terraform` by name, as a
/// user's shell does.
pub fn path_with_tools() -> std::ffi::OsString {
    let sg_dir = assert_cmd::cargo::cargo_bin("stategraph")
        .parent()
        .unwrap()
        .to_owned();
    let tf_dir = terraform_bin().parent().unwrap().to_owned();
    std::env::join_paths([sg_dir, tf_dir].into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap()
}

/// The terraform binary: `$STATEGRAPH_TERRAFORM`, else `terraform` on PATH.
///
/// Panics with an install hint when neither exists: tests that need terraform
/// fail rather than skip.
pub fn terraform_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(configured) = std::env::var_os(TERRAFORM_ENV).filter(|v| !v.is_empty()) {
            let configured = PathBuf::from(configured);
            let found = if configured.components().count() > 1 {
                is_executable(&configured).then_some(configured.clone())
            } else {
                find_on_path(configured.as_os_str())
            };
            return found.unwrap_or_else(|| {
                panic!(
                    "{TERRAFORM_ENV}={} is not an executable file; install terraform >= 1.5 \
                     or point {TERRAFORM_ENV} at its binary",
                    configured.display()
                )
            });
        }
        find_on_path(OsStr::new("terraform")).unwrap_or_else(|| {
            panic!("terraform not found on PATH; install terraform >= 1.5 or set {TERRAFORM_ENV}")
        })
    })
    .clone()
}

/// Sets the environment every terraform run of a test needs.
///
/// `TF_CLI_CONFIG_FILE` points at `cli_config` (the machine's own setting names
/// a file that does not exist), checkpoint calls and prompts are off, and
/// variables of the caller's environment that would change terraform's
/// behaviour (`TF_CLI_ARGS*`, `TF_DATA_DIR`, `TF_WORKSPACE`, `TF_VAR_*`,
/// `TF_LOG*`, `TF_PLUGIN_CACHE_DIR`) are removed. Call it before setting any
/// of those on purpose. Use it on a `stategraph` command too: the terraform it
/// spawns inherits the environment.
pub fn tf_env(cmd: &mut Command, cli_config: &Path) {
    for key in leaking_env_vars() {
        cmd.env_remove(key);
    }
    cmd.env("TF_CLI_CONFIG_FILE", cli_config)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0");
}

/// The variables of this process's environment that would change how
/// terraform behaves in a test (see [`tf_env`]).
pub fn leaking_env_vars() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| {
            key.starts_with("TF_CLI_ARGS")
                || key.starts_with("TF_VAR_")
                || key.starts_with("TF_LOG")
                || matches!(
                    key.as_str(),
                    "TF_DATA_DIR" | "TF_WORKSPACE" | "TF_PLUGIN_CACHE_DIR"
                )
        })
        .collect()
}

/// The offline provider mirror (holding `hashicorp/aws`):
/// `$STATEGRAPH_TF_PLUGIN_MIRROR`, else the first existing candidate directory.
///
/// Panics saying how to set the variable when there is none.
pub fn plugin_mirror() -> PathBuf {
    if let Some(dir) = std::env::var_os(PLUGIN_MIRROR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "{PLUGIN_MIRROR_ENV}={} is not a directory; point it at a terraform provider \
             filesystem mirror (a directory holding registry.terraform.io/hashicorp/aws/...)",
            dir.display()
        );
        return dir;
    }
    PLUGIN_MIRROR_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("registry.terraform.io").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no terraform provider mirror found (looked in {}); the aws tests need \
                 hashicorp/aws offline: set {PLUGIN_MIRROR_ENV}=/path/to/mirror (a directory \
                 holding registry.terraform.io/hashicorp/aws/<version>/linux_amd64/...; find \
                 one with `find / -maxdepth 3 -type d -name tf-plugins`)",
                PLUGIN_MIRROR_CANDIDATES.join(", ")
            )
        })
}

/// CLI configuration text installing every `registry.terraform.io` provider
/// from the filesystem mirror `mirror` and never from the network.
pub fn mirror_cli_config(mirror: &Path) -> String {
    format!(
        r#"disable_checkpoint = true

provider_installation {{
  filesystem_mirror {{
    path    = "{}"
    include = ["registry.terraform.io/*/*"]
  }}
  direct {{
    exclude = ["registry.terraform.io/*/*"]
  }}
}}
"#,
        hcl_escape(&mirror.to_string_lossy())
    )
}

/// CLI configuration for configurations using only built-in providers.
pub const BUILTIN_CLI_CONFIG: &str = "disable_checkpoint = true\n";

/// The directory holding the fixture configurations.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("tf")
}

/// A private, writable copy of one fixture configuration in a temp dir, plus
/// the CLI config file terraform is pointed at.
pub struct TfWorkdir {
    /// The temp dir; it is also terraform's working directory.
    pub dir: tempfile::TempDir,
    cli_config: PathBuf,
}

/// File name of the CLI config inside the workdir (terraform ignores it: not `.tf`).
const CLI_CONFIG_NAME: &str = "cli.tfrc";

impl TfWorkdir {
    /// Copies `fixtures/tf/<name>` into a fresh temp dir and writes a CLI
    /// config for built-in providers there.
    pub fn from_fixture(name: &str) -> TfWorkdir {
        TfWorkdir::from_fixture_with_cli_config(name, BUILTIN_CLI_CONFIG)
    }

    /// A fresh temp dir with no configuration in it (the test writes what
    /// it needs with [`TfWorkdir::write_file`]) and the CLI config for
    /// built-in providers.
    pub fn empty() -> TfWorkdir {
        TfWorkdir::empty_with_cli_config(BUILTIN_CLI_CONFIG)
    }

    /// Like [`TfWorkdir::empty`] with the given CLI config text.
    pub fn empty_with_cli_config(cli_config: &str) -> TfWorkdir {
        let dir = tempfile::Builder::new()
            .prefix("sg-tf-empty-")
            .tempdir()
            .expect("creating a temp dir for a terraform workdir");
        let cli_path = dir.path().join(CLI_CONFIG_NAME);
        fs::write(&cli_path, cli_config).expect("writing the terraform CLI config");
        TfWorkdir {
            dir,
            cli_config: cli_path,
        }
    }

    /// Like [`TfWorkdir::from_fixture`] with the given CLI config text.
    pub fn from_fixture_with_cli_config(name: &str, cli_config: &str) -> TfWorkdir {
        let source = fixtures_dir().join(name);
        assert!(
            source.is_dir(),
            "no fixture configuration {} (fixtures are the directories of fixtures/tf/)",
            source.display()
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("sg-tf-{}-", name.replace(['/', ' '], "_")))
            .tempdir()
            .expect("creating a temp dir for a terraform workdir");
        copy_config_tree(&source, dir.path());
        let cli_path = dir.path().join(CLI_CONFIG_NAME);
        fs::write(&cli_path, cli_config).expect("writing the terraform CLI config");
        TfWorkdir {
            dir,
            cli_config: cli_path,
        }
    }

    /// The working directory (the root module).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The CLI config file every terraform run here uses.
    pub fn cli_config(&self) -> &Path {
        &self.cli_config
    }

    /// `terraform.tfstate` in the workdir (the local backend's default).
    pub fn state_path(&self) -> PathBuf {
        self.path().join("terraform.tfstate")
    }

    /// Writes (or replaces) a file relative to the workdir.
    pub fn write_file(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("creating a directory in the workdir");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// A terraform command in this workdir with the test environment set, not
    /// yet started (for tests that need to spawn, signal or feed it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(terraform_bin());
        tf_env(&mut cmd, &self.cli_config);
        cmd.args(args).current_dir(self.path());
        cmd
    }

    /// Runs terraform here; panics with its stdout and stderr if it fails.
    pub fn terraform(&self, args: &[&str]) -> Output {
        let out = self.terraform_allow_fail(args);
        if !out.status.success() {
            panic!("{}", describe_run(args, self.path(), &out));
        }
        out
    }

    /// Runs terraform here and returns whatever happened.
    pub fn terraform_allow_fail(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap_or_else(|e| {
            panic!(
                "could not run {}: {e}; install terraform >= 1.5 or set {TERRAFORM_ENV}",
                terraform_bin().display()
            )
        })
    }

    /// `terraform show -json STATE_FILE`, run here (so that providers the
    /// state needs are the ones this workdir installed), parsed.
    pub fn show_json(&self, state_file: &Path) -> serde_json::Value {
        let state_arg = state_file.to_string_lossy();
        let out = self.terraform(&["show", "-json", "-no-color", &state_arg]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`terraform show -json {state_arg}` printed invalid JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The state file parsed as JSON.
    pub fn state_json(&self) -> serde_json::Value {
        read_json(&self.state_path())
    }
}

/// Makes `fixture` into a real terraform state: `init`, `apply`, and the extra
/// steps the fixture needs. The returned workdir's `terraform.tfstate` is the
/// produced state, and the workdir is initialized (so `show_json` works).
///
/// - `rich`: taints `terraform_data.zone[1]` and
///   `module.team["a b"].terraform_data.member[0]` after the apply.
/// - `deposed`: a second apply replaces `terraform_data.cbd` and
///   `terraform_data.cbd_keyed["k 1"]` with a failing provisioner, leaving each
///   with a tainted current object and a deposed object; checked here.
/// - `aws_*`: needs a moto server; use `moto::aws_workdir` and
///   `moto::produce_aws_state` instead.
/// - anything else: init + apply.
pub fn produce_state(fixture: &str) -> TfWorkdir {
    assert!(
        !fixture.starts_with("aws"),
        "fixture {fixture:?} talks to AWS: use moto::produce_aws_state(&Moto::start(), {fixture:?})"
    );
    let wd = TfWorkdir::from_fixture(fixture);
    wd.terraform(&["init", "-input=false", "-no-color"]);
    wd.terraform(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    match fixture {
        "rich" => {
            wd.terraform(&["taint", "-no-color", "terraform_data.zone[1]"]);
            wd.terraform(&[
                "taint",
                "-no-color",
                r#"module.team["a b"].terraform_data.member[0]"#,
            ]);
        }
        "deposed" => {
            let out = wd.terraform_allow_fail(&[
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-var",
                "fail_create=true",
                "-replace=terraform_data.cbd",
                r#"-replace=terraform_data.cbd_keyed["k 1"]"#,
            ]);
            assert!(
                !out.status.success(),
                "the failing replacement of fixture `deposed` unexpectedly succeeded:\n{}",
                describe_run(&["apply", "-replace=..."], wd.path(), &out)
            );
            let state = wd.state_json();
            let deposed = count_instances(&state, |i| i.get("deposed").is_some());
            assert_eq!(
                deposed,
                2,
                "fixture `deposed` should leave 2 deposed objects in {}; terraform said:\n{}",
                wd.state_path().display(),
                describe_run(&["apply", "-replace=..."], wd.path(), &out)
            );
        }
        _ => {}
    }
    wd
}

/// Counts the instance objects of a state v4 JSON matching `pred`.
pub fn count_instances(
    state: &serde_json::Value,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> usize {
    state["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["instances"].as_array().into_iter().flatten())
        .filter(|i| pred(i))
        .count()
}

/// Reads and parses a JSON file, panicking with its path on failure.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// A readable account of a finished terraform run, for panic messages.
pub fn describe_run(args: &[&str], dir: &Path, out: &Output) -> String {
    format!(
        "`terraform {}` in {} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copies a fixture directory, leaving out anything a local terraform run in
/// the fixture directory itself may have left behind.
fn copy_config_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.expect("reading a fixture directory entry");
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str == ".terraform"
            || name_str == ".terraform.lock.hcl"
            || name_str.starts_with("terraform.tfstate")
            || name_str.ends_with("_override.tf")
        {
            continue;
        }
        let target = to.join(&name);
        let kind = entry.file_type().expect("reading a fixture file type");
        if kind.is_dir() {
            copy_config_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copying {}: {e}", entry.path().display()));
        }
    }
}

fn find_on_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn hcl_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
