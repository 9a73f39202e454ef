//! Flags + environment + defaults -> one validated [`Settings`].
//!
//! This is the only module that reads stategraph's own environment (clap
//! reads the `env = ...` flags). Everything downstream takes `&Settings` and
//! never re-parses or re-reads a variable. Terraform's child processes
//! inherit the environment as it is, so terraform reads its own variables
//! itself; what stategraph must know of them (`TF_DATA_DIR`,
//! `TF_WORKSPACE`, `TF_INPUT`, `TF_VAR_*`, `TF_CLI_ARGS*`) is read here once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::checkout::Checkout;
use crate::cli::GlobalArgs;
use crate::db::pool::{PgTarget, TlsMode};
use crate::db::store::Actor;
use crate::ui::Ui;

/// Every setting a command may need, resolved once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the state lives.
    pub database: DatabaseTarget,
    /// The working directory (after `-chdir`).
    pub workdir: PathBuf,
    /// `--state` / `STATEGRAPH_STATE`, if given.
    pub explicit_state: Option<String>,
    /// The root module's checkout: its repository and path, which name its
    /// default state and record where states come from.
    pub checkout: Checkout,
    /// `--adopt-state`: record this checkout as the state's origin.
    pub adopt_state: bool,
    /// Terraform workspace (`TF_WORKSPACE`, else `.terraform/environment`, else `default`).
    pub workspace: String,
    /// Whether `TF_WORKSPACE` chose the workspace (then it cannot be switched).
    pub workspace_from_env: bool,
    /// The user's terraform data directory (`TF_DATA_DIR`, relative to the
    /// working directory, else `.terraform`): where `init` installed
    /// providers and modules, and where `workspace select` records the
    /// workspace.
    pub tf_data_dir: PathBuf,
    /// `TF_VAR_*` variables, sorted: values of the configuration's
    /// variables, for discovery.
    pub tf_vars: Vec<(String, String)>,
    /// `TF_CLI_ARGS`, `TF_CLI_ARGS_plan` and `TF_CLI_ARGS_apply`, where set:
    /// arguments terraform adds itself, for discovery.
    pub tf_cli_args: Vec<(String, String)>,
    /// The system temp dir (`TMPDIR`, else `/tmp`): private run dirs, the
    /// override lock files.
    pub temp_dir: PathBuf,
    /// Where a run keeps what it could not write (`STATEGRAPH_RECOVERY_DIR`,
    /// else `stategraph/recovery` in the terraform data dir of the working
    /// directory: it stays with the checkout, and a CI job can keep it as
    /// an artifact).
    pub recovery_dir: PathBuf,
    /// Whether this runs in CI (`CI` set and not `false`).
    pub ci: bool,
    /// The embedded cluster's configuration (used when `database` is `Embedded`,
    /// and by `stategraph db`).
    pub embedded: EmbeddedConfig,
    /// Terraform (or OpenTofu) binary: `STATEGRAPH_TERRAFORM`, else `terraform`
    /// then `tofu` on PATH. `None` if neither was found.
    pub terraform: Option<PathBuf>,
    /// Who runs this, for the transaction log and lock holders.
    pub actor: Actor,
    /// How long a lock lives without renewal (`--lock-lease` /
    /// `STATEGRAPH_LOCK_LEASE`, default 60s): a holder that dies blocks
    /// others no longer than this.
    pub lock_lease: std::time::Duration,
    /// How long a run keeps trying to record terraform's result while the
    /// database is unreachable (`STATEGRAPH_DB_RETRY`, default 60s) before
    /// it keeps the result in a recovery file.
    pub db_retry: std::time::Duration,
    /// Whether terraform refreshes only the written instances, in a run of
    /// its own beside or before a refresh-less plan
    /// (`STATEGRAPH_SCOPED_REFRESH`: `auto`, the default, when that is
    /// estimated faster than one targeted plan, see
    /// [`crate::engine::strategy`]; `always`; `never`: terraform's targeted
    /// plan refreshes the written instances and everything they depend on).
    pub scoped_refresh: ScopedRefresh,
    /// Whether a scoped refresh and the plan of the cone run side by side,
    /// the plan kept when the refresh finds nothing changed outside
    /// terraform (`STATEGRAPH_SPECULATIVE_PLAN`: `1`, the default, or `0`
    /// for one after the other).
    pub speculative_plan: bool,
    /// Whether terraform's plans are served by one process per provider,
    /// started by stategraph, where that is the same plan
    /// (`STATEGRAPH_SHARED_PROVIDERS`: `1`, the default, or `0`: terraform
    /// starts its providers itself; see [`crate::terraform::providers`]).
    /// Off while the user debugs providers (`TF_LOG*`,
    /// `TF_REATTACH_PROVIDERS`, `dev_overrides` in terraform's CLI
    /// configuration: `TF_CLI_CONFIG_FILE`, else `~/.terraformrc` and
    /// `~/.terraform.d/*.tfrc`).
    pub shared_providers: bool,
    /// Whether the plan of the cone runs on a private state holding only
    /// the cone and what terraform evaluates besides it (every instance of
    /// each resource the cone depends on and each evaluated root output
    /// reads), not every instance (`STATEGRAPH_PARTIAL_STATE`: `1`, the
    /// default; `0` hands terraform the whole state).
    pub partial_state: bool,
    /// `STATEGRAPH_READ_TARGET_SESSION_ATTRS` (`any`, `read-only`,
    /// `read-write`): which servers of a multi-host URL the commands that
    /// only read may use, in place of the URL's `target_session_attrs`
    /// (`any` lets them read from a standby). Unset: the URL's.
    pub read_session_attrs: Option<tokio_postgres::config::TargetSessionAttrs>,
    /// `TF_INPUT` is not `0`/`false`: terraform (and we) may ask questions.
    pub tf_input: bool,
    /// `STATEGRAPH_DISCOVERY_ORACLE=1` (the tests): every discovery is
    /// checked against terraform's full refresh-less plan, and every plan
    /// file read against `terraform show -json`.
    pub discovery_oracle: bool,
    /// The share of `stategraph plan` runs that also run terraform's plan of
    /// the whole configuration and check that the plan of the cone equals
    /// it (`STATEGRAPH_VERIFY`: `0`, the default, to `1`; e.g. `0.05`);
    /// `plan -verify` always does.
    pub verify_rate: f64,
    /// Messages and progress.
    pub ui: Ui,
}

/// See [`Settings::scoped_refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopedRefresh {
    Auto,
    Always,
    Never,
}

/// Which PostgreSQL to talk to.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    /// A server given by URL or by the libpq `PG*` variables.
    Remote(Box<PgTarget>),
    /// The private cluster under the user's data directory.
    Embedded,
}

impl DatabaseTarget {
    /// The variables of our environment terraform must not see: the
    /// database URL variable always, and the libpq variables stategraph
    /// connected with (the embedded cluster uses none, so there a
    /// configuration's own `PG*` variables pass, as under terraform alone).
    pub fn hidden_env(&self) -> Vec<String> {
        let mut hidden = vec!["STATEGRAPH_DATABASE_URL".to_owned()];
        if let DatabaseTarget::Remote(t) = self {
            hidden.extend(t.env_used.iter().cloned());
        }
        hidden
    }
}

/// Where the embedded cluster lives and how it runs.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// `STATEGRAPH_DATA_DIR`, else `/var/lib/stategraph` for root (PostgreSQL
    /// runs as an unprivileged user, who cannot enter `/root`), else
    /// `$XDG_DATA_HOME/stategraph`, else `~/.local/share/stategraph`.
    pub data_dir: PathBuf,
    /// `STATEGRAPH_PG_BIN`: directory holding `initdb`, `pg_ctl`, `postgres`.
    pub pg_bin: Option<PathBuf>,
    /// The unprivileged user that runs PostgreSQL when we are root
    /// (`STATEGRAPH_PG_USER`, default `postgres`); `None` when not root.
    pub run_as: Option<String>,
    /// `PATH`, where `initdb` is looked for without `STATEGRAPH_PG_BIN`.
    pub search_path: Option<String>,
    /// Refuse to create the cluster: in CI (`CI` set) a runner thrown away
    /// after the job would lose the state, unless `STATEGRAPH_ALLOW_EMBEDDED=1`.
    /// An existing cluster is used; `stategraph db start` creates it anyway.
    pub refuse_create: bool,
}

impl Settings {
    /// Resolves settings from parsed global flags and the process environment.
    pub fn resolve(global: &GlobalArgs) -> Result<Settings> {
        let env: BTreeMap<String, OsString> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
            .collect();
        Settings::resolve_with(global, &env)
    }

    /// Like [`Settings::resolve`], with the environment given explicitly (tests).
    pub fn resolve_with(global: &GlobalArgs, env: &BTreeMap<String, OsString>) -> Result<Settings> {
        let get = |k: &str| {
            env.get(k)
                .and_then(|v| v.to_str())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };

        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let workdir = match &global.chdir {
            Some(dir) => {
                let dir = cwd.join(dir);
                if !dir.is_dir() {
                    bail!(
                        "-chdir: {} is not a directory.\n\nGive an existing directory holding the root module.",
                        dir.display()
                    );
                }
                dir
            }
            None => cwd,
        };

        let database = match &global.database_url {
            Some(url) => DatabaseTarget::Remote(Box::new(PgTarget::from_url_with_env(url, &get)?)),
            None if get("PGHOST").is_some()
                || get("PGHOSTADDR").is_some()
                || get("PGDATABASE").is_some() =>
            {
                DatabaseTarget::Remote(Box::new(PgTarget::from_libpq_env(&get)?))
            }
            None if get("PGSERVICE").is_some() => bail!(
                "PGSERVICE is set, but stategraph does not read pg_service.conf.\n\n\
Name the server with --database-url (STATEGRAPH_DATABASE_URL) or PGHOST, PGPORT, PGDATABASE..."
            ),
            None => DatabaseTarget::Embedded,
        };

        let tf_data_dir = get("TF_DATA_DIR")
            .map(|d| workdir.join(d))
            .unwrap_or_else(|| workdir.join(".terraform"));
        let workspace_from_env = get("TF_WORKSPACE").is_some();
        let workspace = match get("TF_WORKSPACE") {
            Some(ws) => ws,
            None => {
                let data_dir = &tf_data_dir;
                std::fs::read_to_string(data_dir.join("environment"))
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".to_owned())
            }
        };

        let is_root = nix::unistd::geteuid().is_root();
        let ci = get("CI").is_some_and(|v| v != "false");
        let data_dir = if let Some(d) = get("STATEGRAPH_DATA_DIR") {
            PathBuf::from(d)
        } else if is_root {
            PathBuf::from("/var/lib/stategraph")
        } else if let Some(xdg) = get("XDG_DATA_HOME") {
            PathBuf::from(xdg).join("stategraph")
        } else if let Some(home) = get("HOME") {
            PathBuf::from(home).join(".local/share/stategraph")
        } else {
            bail!("cannot find a data directory for the embedded database: set STATEGRAPH_DATA_DIR or HOME, or give --database-url");
        };
        let embedded = EmbeddedConfig {
            data_dir,
            pg_bin: get("STATEGRAPH_PG_BIN").map(PathBuf::from),
            run_as: is_root
                .then(|| get("STATEGRAPH_PG_USER").unwrap_or_else(|| "postgres".to_owned())),
            search_path: get("PATH"),
            refuse_create: ci && get("STATEGRAPH_ALLOW_EMBEDDED").as_deref() != Some("1"),
        };

        let terraform = match get("STATEGRAPH_TERRAFORM") {
            Some(t) => Some(PathBuf::from(t)),
            None => find_on_path("terraform", get("PATH").as_deref())
                .or_else(|| find_on_path("tofu", get("PATH").as_deref())),
        };

        let actor = Actor {
            user: get("USER")
                .or_else(|| get("LOGNAME"))
                .or_else(|| {
                    nix::unistd::User::from_uid(nix::unistd::geteuid())
                        .ok()
                        .flatten()
                        .map(|u| u.name)
                })
                .unwrap_or_else(|| format!("uid {}", nix::unistd::geteuid())),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".to_owned()),
            ci_job: ci_job(&get),
            git_commit: None,
            git_branch: None,
        };

        let lease_text = global
            .lock_lease
            .clone()
            .or_else(|| get("STATEGRAPH_LOCK_LEASE"))
            .unwrap_or_else(|| "60s".to_owned());
        let lock_lease = crate::tfargs::parse_duration(&lease_text)
            .filter(|d| *d >= std::time::Duration::from_secs(1))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "lock lease {lease_text:?} is not a duration of at least 1s (e.g. 30s, 2m)"
                )
            })?;

        let retry_text = get("STATEGRAPH_DB_RETRY").unwrap_or_else(|| "60s".to_owned());
        let db_retry = crate::tfargs::parse_duration(&retry_text).ok_or_else(|| {
            anyhow::anyhow!(
                "STATEGRAPH_DB_RETRY={retry_text:?} is not a duration (e.g. 0s, 30s, 2m)"
            )
        })?;

        let scoped_refresh = match get("STATEGRAPH_SCOPED_REFRESH").as_deref() {
            None | Some("auto") => ScopedRefresh::Auto,
            Some("always") => ScopedRefresh::Always,
            Some("never") => ScopedRefresh::Never,
            Some(other) => {
                anyhow::bail!("STATEGRAPH_SCOPED_REFRESH={other:?}: expected auto, always or never")
            }
        };

        let speculative_plan = match get("STATEGRAPH_SPECULATIVE_PLAN").as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => anyhow::bail!("STATEGRAPH_SPECULATIVE_PLAN={other:?}: expected 1 or 0"),
        };

        let shared_providers = match get("STATEGRAPH_SHARED_PROVIDERS").as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => anyhow::bail!("STATEGRAPH_SHARED_PROVIDERS={other:?}: expected 1 or 0"),
        };
        // Left to terraform while the user debugs providers.
        let cli_config_files: Vec<PathBuf> =
            match get("TF_CLI_CONFIG_FILE").or_else(|| get("TERRAFORM_CONFIG")) {
                Some(f) => vec![PathBuf::from(f)],
                None => {
                    let home = get("HOME").map(PathBuf::from).unwrap_or_default();
                    let mut files = vec![home.join(".terraformrc")];
                    if let Ok(entries) = std::fs::read_dir(home.join(".terraform.d")) {
                        files.extend(
                            entries
                                .flatten()
                                .map(|e| e.path())
                                .filter(|p| p.extension().is_some_and(|x| x == "tfrc")),
                        );
                    }
                    files
                }
            };
        let shared_providers = shared_providers
            && !crate::terraform::providers::DEBUGGING
                .iter()
                .any(|k| get(k).is_some())
            && !crate::terraform::providers::dev_overrides(&cli_config_files);

        let read_session_attrs = match get("STATEGRAPH_READ_TARGET_SESSION_ATTRS").as_deref() {
            None | Some("") => None,
            Some("any") => Some(tokio_postgres::config::TargetSessionAttrs::Any),
            Some("read-only") => Some(tokio_postgres::config::TargetSessionAttrs::ReadOnly),
            Some("read-write") => Some(tokio_postgres::config::TargetSessionAttrs::ReadWrite),
            Some(other) => anyhow::bail!(
                "STATEGRAPH_READ_TARGET_SESSION_ATTRS={other:?}: expected any, read-only or read-write"
            ),
        };

        let partial_state = match get("STATEGRAPH_PARTIAL_STATE").as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => anyhow::bail!("STATEGRAPH_PARTIAL_STATE={other:?}: expected 1 or 0"),
        };

        let tf_input = !matches!(
            get("TF_INPUT").as_deref(),
            Some("0" | "false" | "FALSE" | "False")
        );
        let discovery_oracle = get("STATEGRAPH_DISCOVERY_ORACLE").as_deref() == Some("1");
        let verify_rate = match get("STATEGRAPH_VERIFY") {
            None => 0.0,
            Some(text) => parse_rate(&text).ok_or_else(|| {
                anyhow::anyhow!(
                    "STATEGRAPH_VERIFY={text:?} is not a share of runs: expected a number \
                     from 0 (never) to 1 (every plan), e.g. 0.05"
                )
            })?,
        };
        // Set but empty counts: `TF_VAR_x=` gives x the empty string.
        let tf_vars: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("TF_VAR_"))
            .filter_map(|(k, v)| Some((k.clone(), v.to_str()?.to_owned())))
            .collect();
        let tf_cli_args = ["TF_CLI_ARGS", "TF_CLI_ARGS_plan", "TF_CLI_ARGS_apply"]
            .iter()
            .filter_map(|k| Some((k.to_string(), env.get(*k)?.to_str()?.to_owned())))
            .collect();
        let temp_dir = get("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let recovery_dir = get("STATEGRAPH_RECOVERY_DIR")
            .map(|d| workdir.join(d))
            .unwrap_or_else(|| tf_data_dir.join("stategraph").join("recovery"));

        let checkout = Checkout::of(&workdir);
        let mut actor = actor;
        if let Some(repo) = &checkout.repo {
            actor.git_commit = repo.commit.clone();
            actor.git_branch = repo.branch.clone();
        }
        Ok(Settings {
            checkout,
            tf_data_dir,
            tf_vars,
            tf_cli_args,
            temp_dir,
            recovery_dir,
            ci,
            workspace_from_env,
            tf_input,
            discovery_oracle,
            verify_rate,
            lock_lease,
            db_retry,
            scoped_refresh,
            speculative_plan,
            shared_providers,
            partial_state,
            read_session_attrs,
            actor,
            database,
            workdir,
            explicit_state: global.state.clone(),
            adopt_state: global.adopt_state,
            workspace,
            embedded,
            terraform,
            ui: Ui::new(global.no_color, ci),
        })
    }

    /// These settings with variables given values (answers to terraform's
    /// prompt), as if by `TF_VAR_NAME` in the environment.
    pub fn with_variables(&self, values: &[(String, String)]) -> Settings {
        let mut s = self.clone();
        for (name, value) in values {
            let key = format!("TF_VAR_{name}");
            s.tf_vars.retain(|(k, _)| *k != key);
            s.tf_vars.push((key, value.clone()));
        }
        s.tf_vars.sort();
        s
    }

    /// Where this command's private run dirs are made, for the root module
    /// in the working directory.
    pub fn layout(&self) -> crate::terraform::rundir::Layout {
        crate::terraform::rundir::Layout {
            temp_dir: self.temp_dir.clone(),
            root: self.workdir.clone(),
            user_data_dir: self.tf_data_dir.clone(),
            watcher: std::env::current_exe().ok(),
        }
    }

    /// The state name: `--state`, else [`Checkout::state_name`], plus
    /// `:WORKSPACE` unless the workspace is `default`.
    pub fn state_name(&self) -> String {
        match &self.explicit_state {
            Some(name) => name.clone(),
            None => self.state_name_for(&self.workspace),
        }
    }

    /// The state name of `workspace` in this root module.
    pub fn state_name_for(&self, workspace: &str) -> String {
        let base = self.base_state_name();
        if workspace == "default" {
            base
        } else {
            format!("{base}:{workspace}")
        }
    }

    /// The state name of `default` in this root module (see
    /// [`Checkout::state_name`]).
    pub fn base_state_name(&self) -> String {
        self.checkout.state_name()
    }

    /// Where a state created from this checkout comes from (`None` outside
    /// git, see [`Checkout::origin`]).
    pub fn origin(&self) -> Option<crate::checkout::Origin> {
        self.checkout.origin(&self.actor.host)
    }
}

/// A reference to the CI job we run in, from the variables common CI systems
/// set: a link to the job where the CI says where it is.
fn ci_job(get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let (Some(server), Some(repo), Some(run)) = (
        get("GITHUB_SERVER_URL"),
        get("GITHUB_REPOSITORY"),
        get("GITHUB_RUN_ID"),
    ) {
        // A re-run is a run of its own.
        let attempt = get("GITHUB_RUN_ATTEMPT")
            .filter(|a| a != "1")
            .map(|a| format!("/attempts/{a}"))
            .unwrap_or_default();
        return Some(format!("{server}/{repo}/actions/runs/{run}{attempt}"));
    }
    if let (Some(collection), Some(project), Some(build)) = (
        get("SYSTEM_COLLECTIONURI"),
        get("SYSTEM_TEAMPROJECT"),
        get("BUILD_BUILDID"),
    ) {
        let collection = collection.trim_end_matches('/');
        return Some(format!(
            "{collection}/{project}/_build/results?buildId={build}"
        ));
    }
    if let (Some(repo), Some(build)) = (
        get("BITBUCKET_REPO_FULL_NAME"),
        get("BITBUCKET_BUILD_NUMBER"),
    ) {
        return Some(format!(
            "https://bitbucket.org/{repo}/pipelines/results/{build}"
        ));
    }
    [
        "CI_JOB_URL",
        "BUILDKITE_BUILD_URL",
        "CIRCLE_BUILD_URL",
        "BUILD_URL",
        "CI_JOB_ID",
    ]
    .iter()
    .find_map(|k| get(k))
}

/// First executable named `name` on `path`.
pub fn find_on_path(name: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

impl TlsMode {
    /// Parses a libpq `sslmode` value.
    pub fn parse(s: &str) -> Result<TlsMode> {
        Ok(match s {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => bail!(
                "sslmode={other} is not a libpq sslmode: use disable, prefer, require, verify-ca or verify-full"
            ),
        })
    }
}

/// A share of runs: a number from 0 to 1.
fn parse_rate(text: &str) -> Option<f64> {
    let rate: f64 = text.trim().parse().ok()?;
    (0.0..=1.0).contains(&rate).then_some(rate)
}

impl Settings {
    /// Whether this plan verifies ([`Settings::verify_rate`]): never at 0,
    /// always at 1, else with that probability.
    pub fn sample_verify(&self) -> bool {
        if self.verify_rate <= 0.0 {
            return false;
        }
        if self.verify_rate >= 1.0 {
            return true;
        }
        use std::io::Read;
        let mut b = [0u8; 8];
        let drawn = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        // Without randomness, verify: the safe side.
        drawn.is_err() || (u64::from_le_bytes(b) as f64 / u64::MAX as f64) < self.verify_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_rates() {
        assert_eq!(parse_rate("0"), Some(0.0));
        assert_eq!(parse_rate("1"), Some(1.0));
        assert_eq!(parse_rate("0.05"), Some(0.05));
        assert_eq!(parse_rate("1.5"), None);
        assert_eq!(parse_rate("-0.1"), None);
        assert_eq!(parse_rate("yes"), None);
        let never = Settings::resolve_with(&global(), &env(&[("STATEGRAPH_VERIFY", "0")])).unwrap();
        assert!((0..100).all(|_| !never.sample_verify()));
        let always =
            Settings::resolve_with(&global(), &env(&[("STATEGRAPH_VERIFY", "1")])).unwrap();
        assert!((0..100).all(|_| always.sample_verify()));
        let bad = Settings::resolve_with(&global(), &env(&[("STATEGRAPH_VERIFY", "often")]));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("STATEGRAPH_VERIFY=\"often\""));
    }

    fn job_of(vars: &[(&str, &str)]) -> Option<String> {
        let get = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        ci_job(&get)
    }

    #[test]
    fn the_ci_job_is_a_link_to_it() {
        let github = [
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/infra"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "1"),
        ];
        assert_eq!(
            job_of(&github).as_deref(),
            Some("https://github.com/acme/infra/actions/runs/42")
        );
        let mut rerun = github;
        rerun[3].1 = "2";
        assert_eq!(
            job_of(&rerun).as_deref(),
            Some("https://github.com/acme/infra/actions/runs/42/attempts/2")
        );
        assert_eq!(
            job_of(&[
                ("CI_JOB_URL", "https://gitlab.com/acme/infra/-/jobs/7"),
                ("CI_JOB_ID", "7")
            ])
            .as_deref(),
            Some("https://gitlab.com/acme/infra/-/jobs/7")
        );
        assert_eq!(
            job_of(&[
                ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/acme/"),
                ("SYSTEM_TEAMPROJECT", "infra"),
                ("BUILD_BUILDID", "9")
            ])
            .as_deref(),
            Some("https://dev.azure.com/acme/infra/_build/results?buildId=9")
        );
        assert_eq!(
            job_of(&[
                ("BITBUCKET_REPO_FULL_NAME", "acme/infra"),
                ("BITBUCKET_BUILD_NUMBER", "3")
            ])
            .as_deref(),
            Some("https://bitbucket.org/acme/infra/pipelines/results/3")
        );
        assert_eq!(job_of(&[("CI", "true")]), None);
    }

    fn global() -> GlobalArgs {
        GlobalArgs {
            database_url: None,
            state: None,
            chdir: None,
            no_color: true,
            lock_lease: None,
            adopt_state: false,
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, OsString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect()
    }

    #[test]
    fn no_database_configured_means_embedded() {
        let s = Settings::resolve_with(&global(), &env(&[("HOME", "/home/u")])).unwrap();
        assert!(matches!(s.database, DatabaseTarget::Embedded));
    }

    #[test]
    fn libpq_variables_select_a_remote_server() {
        let s = Settings::resolve_with(
            &global(),
            &env(&[
                ("PGHOST", "db.internal"),
                ("PGDATABASE", "tf"),
                ("PGPASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        let DatabaseTarget::Remote(t) = s.database else {
            panic!("expected a remote target")
        };
        assert_eq!(t.display, "db.internal:5432/tf");
    }

    #[test]
    fn workspace_other_than_default_is_part_of_the_state_name() {
        let mut g = global();
        g.chdir = None;
        let s = Settings::resolve_with(&g, &env(&[("TF_WORKSPACE", "staging")])).unwrap();
        assert!(s.state_name().ends_with(":staging"), "{}", s.state_name());
        g.state = Some("explicit".into());
        let s = Settings::resolve_with(&g, &env(&[("TF_WORKSPACE", "staging")])).unwrap();
        assert_eq!(s.state_name(), "explicit");
    }
}
