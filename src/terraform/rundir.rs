//! The private run directory: a working setup for one terraform run against
//! the user's root module directory, leaving that directory as it was.
//! (Not a terraform workspace: those are stored states, see
//! [`crate::settings::Settings::state_name`].)
//!
//! Owns a private temp dir (0700) holding the state handed to terraform
//! (0600), a private `TF_DATA_DIR` and plan files, plus the shared backend
//! override file in the user's directory. It must not touch the user's
//! data dir (`.terraform/` or `TF_DATA_DIR`), `.terraform.lock.hcl` or local
//! state files, and reads no environment variable: [`Layout`] says where
//! everything is.
//!
//! How terraform is pointed at our state whatever backend the configuration
//! declares (measured with terraform 1.11.4):
//! - One override file, [`OVERRIDE_FILE`], with the same content for every
//!   run: `terraform { backend "local" {} }`. It replaces an `s3`, `local`
//!   or `cloud` backend and adds one where the configuration has none.
//!   Each run passes its own state path with `init -backend-config=path=...`
//!   and keeps it in its own `TF_DATA_DIR`, so concurrent runs never see
//!   each other's path.
//! - The private `TF_DATA_DIR` is seeded with a backend cache already naming
//!   that local backend and path. Without it, `init` in a fresh data dir
//!   treats the run as "configuring a backend for the first time" and
//!   migrates any default-location local state (`terraform.tfstate` of a
//!   configuration without a backend block) into ours, then truncates the
//!   user's file to 0 bytes.
//! - `init -lockfile=readonly` keeps `.terraform.lock.hcl` as it is; it fails
//!   (terraform's "Provider dependency changes detected") when the lock file
//!   lacks a provider: the user runs `terraform init` once and commits it.
//! - The private data dir reuses the user's `.terraform/modules` and
//!   `.terraform/providers` through per-entry symlinks (never a symlink to the
//!   directory itself, so that what init writes lands in our copy).
//! - The override file appears while at least one run is active in the
//!   directory: each run holds a shared `flock` on a lock file in the system
//!   temp dir named by a hash of the canonical directory; a run that ends
//!   removes the override only if a non-blocking exclusive lock succeeds.
//!   A run killed with SIGKILL cannot: a watcher process (the stategraph
//!   binary again, [`WATCH_ARG`], in a process group of its own) waits for
//!   the run's end on a pipe only the run holds, and then does the same.
//!   The user's directory is left as it was, whatever happens to the run.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{Flock, FlockArg, OFlag};
use sha2::{Digest, Sha256};

use super::{io_err, Invocation, Output, Terraform, TerraformError};
use crate::tfstate::{self, State};

/// The backend override every run shares; it sorts after other override files.
pub const OVERRIDE_FILE: &str = "zzzz_stategraph_override.tf";
/// Its content: the path is given per run with `-backend-config`.
pub const OVERRIDE_CONTENT: &str = "# Written by stategraph while it runs terraform here; removed when it is done.\nterraform {\n  backend \"local\" {}\n}\n";

/// The hidden first argument that makes the stategraph binary the watcher
/// of one directory's override file: `stategraph WATCH_ARG ROOT LOCK_PATH`
/// (see [`watch_override`]).
pub const WATCH_ARG: &str = "__stategraph-watch-override";

/// The file in a private dir naming the pid of the run that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Where private run dirs are made, and the user's directories they serve.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The system temp dir (`TMPDIR`), where private run dirs live.
    pub temp_dir: PathBuf,
    /// The user's root module directory.
    pub root: PathBuf,
    /// The user's terraform data dir (`TF_DATA_DIR`, else `.terraform`),
    /// whose installed providers and modules runs reuse.
    pub user_data_dir: PathBuf,
    /// The stategraph binary, run as the override file's watcher (see the
    /// module docs); `None`: no watcher (a library user, the tests).
    pub watcher: Option<PathBuf>,
}

impl Layout {
    /// A new private run dir with `state` as the state terraform sees.
    pub fn run_dir(&self, state: &State) -> Result<RunDir, TerraformError> {
        RunDir::create(self, state, None, false)
    }

    /// Like [`Layout::run_dir`] (or [`Layout::named_run_dir`] with a
    /// `name`), the state written only when [`RunDir::ensure_state`] or
    /// [`RunDir::write_state`] says so: a run that hands terraform a partial
    /// state never writes the whole one (a third of a second at 100,000
    /// instances). Until then the file holds the state without resources.
    pub fn run_dir_deferred(
        &self,
        state: &State,
        name: Option<&str>,
    ) -> Result<RunDir, TerraformError> {
        RunDir::create(self, state, name, true)
    }

    /// Like [`Layout::run_dir`], in a private dir of the exact name `name`
    /// under the temp dir (it must not exist). A saved plan records the
    /// path of the state it was planned with, so the run that applies it,
    /// perhaps on another machine, must use the same path.
    pub fn named_run_dir(&self, state: &State, name: &str) -> Result<RunDir, TerraformError> {
        RunDir::create(self, state, Some(name), false)
    }

    /// Private dirs of runs of this user that died without removing them
    /// (SIGKILL, a lost machine): their owner pid is gone. A dead run's
    /// terraform may still be stopping gracefully (its `TF_DATA_DIR`
    /// points inside): [`Orphan::busy`] names such processes.
    pub fn orphans(&self) -> Vec<Orphan> {
        orphans_in(&self.temp_dir)
    }
}

/// See [`Layout::orphans`].
#[derive(Debug, Clone)]
pub struct Orphan {
    /// The private dir.
    pub path: PathBuf,
    /// Processes still using it (the dead run's terraform, stopping).
    pub busy: Vec<i32>,
}

impl Orphan {
    /// Processes using the dir now (see [`Orphan::busy`]).
    pub fn still_busy(&self) -> Vec<i32> {
        data_dirs_in_use()
            .into_iter()
            .filter(|(_, d)| d.starts_with(&self.path))
            .map(|(pid, _)| pid)
            .collect()
    }
}

fn orphans_in(temp_dir: &Path) -> Vec<Orphan> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(temp_dir) else {
        return Vec::new();
    };
    let uid = nix::unistd::geteuid().as_raw();
    // Read every process's environment only when a dead owner was found
    // (this runs at the start of every plan and apply).
    let mut in_use: Option<Vec<(i32, PathBuf)>> = None;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("stategraph-run-") || name.starts_with("stategraph-plan-")) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let Some(pid) = fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if is_alive(pid) {
            continue;
        }
        let busy = in_use
            .get_or_insert_with(data_dirs_in_use)
            .iter()
            .filter(|(_, d)| d.starts_with(&path))
            .map(|(pid, _)| *pid)
            .collect();
        out.push(Orphan { path, busy });
    }
    out
}

/// Whether process `pid` runs: it exists and is not a zombie (a killed run
/// whose parent has not reaped it yet, as under an init that never does).
fn is_alive(pid: i32) -> bool {
    let exists = !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    );
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the `(comm)` field, which may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false);
    exists && !zombie
}

/// `TF_DATA_DIR` of every process we can read (ours), with its pid.
fn data_dirs_in_use() -> Vec<(i32, PathBuf)> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = fs::read(p.path().join("environ")) else {
            continue;
        };
        for var in env.split(|b| *b == 0) {
            if let Some(v) = var.strip_prefix(b"TF_DATA_DIR=") {
                out.push((pid, PathBuf::from(String::from_utf8_lossy(v).into_owned())));
            }
        }
    }
    out
}

impl Layout {
    /// A private `TF_DATA_DIR` in which terraform reaches the
    /// configuration's own backend (`init`, then `state pull`), with the
    /// user's providers and modules linked. Made while no stategraph run
    /// uses the directory (it waits for them): their override file would
    /// hide that backend.
    pub fn backend_dir(&self) -> Result<BackendDir, TerraformError> {
        let root = self
            .root
            .canonicalize()
            .map_err(io_err(format!("cannot open {}", self.root.display())))?;
        let lock_path = lock_path(&root, &self.temp_dir);
        let file = open_lock_file(&lock_path)?;
        let exclusive = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            TerraformError::Io {
                what: format!("cannot lock {}", lock_path.display()),
                source: errno.into(),
            }
        })?;
        // Left by a run that was killed: no run is active now.
        let _ = fs::remove_file(root.join(OVERRIDE_FILE));
        let dir = tempfile::Builder::new()
            .prefix("stategraph-backend-")
            .tempdir_in(&self.temp_dir)
            .map_err(io_err("cannot create a private temp dir"))?;
        let data_dir = dir.path().join("data");
        fs::create_dir(&data_dir).map_err(io_err("cannot create TF_DATA_DIR"))?;
        link_modules(
            &self.user_data_dir.join("modules"),
            &data_dir.join("modules"),
        )?;
        link_tree(
            &self.user_data_dir.join("providers"),
            &data_dir.join("providers"),
            5,
        )?;
        Ok(BackendDir {
            root,
            data_dir,
            _dir: dir,
            _exclusive: exclusive,
        })
    }
}

/// See [`Layout::backend_dir`]. Removed, and the directory free for runs
/// again, when dropped.
#[derive(Debug)]
pub struct BackendDir {
    root: PathBuf,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
    _exclusive: Flock<File>,
}

impl BackendDir {
    /// A terraform command in the user's directory, its data in this dir.
    pub fn command(&self, tf: &Terraform) -> Invocation {
        tf.command(&self.root)
            .env("TF_DATA_DIR", &self.data_dir)
            .env("TF_IN_AUTOMATION", "1")
    }
}

/// One run's private state, data dir and plan files.
#[derive(Debug)]
pub struct RunDir {
    /// Where it was made (the root canonical), for a sibling dir.
    layout: Layout,
    root: PathBuf,
    // Field order matters for Drop: remove our files, then release the override.
    dir: tempfile::TempDir,
    state_path: PathBuf,
    /// Whether `state_path` holds the run's state (see [`Layout::run_dir_deferred`]).
    state_written: AtomicBool,
    data_dir: PathBuf,
    /// The directory terraform plans and applies the cone in, where the
    /// configuration is narrowed (see [`RunDir::narrow`]); else the root.
    cone_root: std::sync::Mutex<Option<PathBuf>>,
    /// Providers its plans serve from one process each (see [`RunDir::share_providers`]).
    sharing: std::sync::Mutex<Option<std::sync::Arc<super::providers::Sharing>>>,
    override_guard: OverrideGuard,
}

impl RunDir {
    fn create(
        layout: &Layout,
        state: &State,
        name: Option<&str>,
        deferred: bool,
    ) -> Result<RunDir, TerraformError> {
        let root = layout
            .root
            .canonicalize()
            .map_err(io_err(format!("cannot open {}", layout.root.display())))?;
        let mut builder = tempfile::Builder::new();
        match name {
            Some(n) => builder.prefix(n).rand_bytes(0),
            None => builder.prefix("stategraph-run-"),
        };
        let dir = builder
            .tempdir_in(&layout.temp_dir)
            .map_err(io_err("cannot create a private temp dir"))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot restrict the private temp dir"))?;

        // Who owns it: a run killed with SIGKILL cannot remove its dir; a
        // later run finds it by this pid being gone (see [`orphans`]).
        write_new(
            &dir.path().join(OWNER_FILE),
            std::process::id().to_string().as_bytes(),
        )?;
        let state_path = dir.path().join("terraform.tfstate");
        let bytes = match deferred {
            false => state.to_json(),
            true => state.with_resources(Vec::new()).to_json(),
        };
        write_new(&state_path, &bytes)?;

        let data_dir = dir.path().join("data");
        fs::create_dir(&data_dir).map_err(io_err("cannot create TF_DATA_DIR"))?;
        seed_backend_cache(&data_dir, &state_path)?;
        let user_data = &layout.user_data_dir;
        link_modules(&user_data.join("modules"), &data_dir.join("modules"))?;
        link_tree(&user_data.join("providers"), &data_dir.join("providers"), 5)?;

        let override_guard =
            OverrideGuard::acquire(&root, &layout.temp_dir, layout.watcher.as_deref())?;
        Ok(RunDir {
            layout: Layout {
                root: root.clone(),
                ..layout.clone()
            },
            root,
            dir,
            state_path,
            state_written: AtomicBool::new(!deferred),
            data_dir,
            cone_root: std::sync::Mutex::new(None),
            sharing: std::sync::Mutex::new(None),
            override_guard,
        })
    }

    /// The user's root module directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where this dir was made: another run dir for the same root module
    /// (a refresh run beside the plan) is made with it.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The state file terraform reads and writes.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The private `TF_DATA_DIR`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The name of the private dir (see [`Layout::named_run_dir`]).
    pub fn dir_name(&self) -> String {
        self.dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The private dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path for a plan file inside the private dir.
    pub fn plan_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.tfplan"))
    }

    /// A terraform command in the user's directory wired to this workspace:
    /// private `TF_DATA_DIR`, `TF_IN_AUTOMATION`, no `TF_WORKSPACE` (our
    /// private backend holds exactly one state, in the default workspace).
    pub fn command(&self, tf: &Terraform) -> Invocation {
        // Never terraform on a state without its resources: it would plan
        // to create them.
        assert!(
            self.state_written.load(Ordering::Relaxed),
            "internal error: terraform run before the run's state was written"
        );
        self.command_before_state(tf)
    }

    /// [`RunDir::command`] for `init`, which does not read the state.
    fn command_before_state(&self, tf: &Terraform) -> Invocation {
        debug_assert!(self.override_guard.active());
        let sharing = self
            .sharing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tf.command(&self.root)
            .env("TF_DATA_DIR", &self.data_dir)
            .env("TF_IN_AUTOMATION", "1")
            .env_remove("TF_WORKSPACE")
            .share_providers(sharing)
    }

    /// From now on, this run's plans serve the providers of `config` that
    /// one process each may serve from such a process (see
    /// [`super::providers`]). `cache` keeps the packages' hashes. Once
    /// found, kept: the run's configuration does not change.
    pub fn share_providers(&self, config: &super::config::Config, cache: Option<&Path>) {
        if self
            .sharing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let sharing = super::providers::Sharing::of(
            config,
            super::providers::Where {
                root: &self.root,
                data_dir: &self.data_dir,
                sockets: self.dir.path().join("plugins"),
                cache,
            },
        )
        .map(std::sync::Arc::new);
        *self.sharing.lock().unwrap_or_else(|e| e.into_inner()) = sharing;
    }

    /// This run's plans serve the providers `other`'s do, as it does (a
    /// refresh run beside the plan of the cone).
    pub fn share_providers_of(&self, other: &RunDir) {
        let sharing = other
            .sharing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        *self.sharing.lock().unwrap_or_else(|e| e.into_inner()) = sharing;
    }

    /// Where the cone is planned and applied from now on ([`RunDir::cone_command`]):
    /// with `modules`, a directory of this run's own (`config/` in the
    /// private dir) holding a link to each entry of the user's root module
    /// directory (its files, module directories, `.terraform.lock.hcl`,
    /// `.terraform`; not local state files nor the shared override file)
    /// and an override file of its own: the backend's, then `modules`
    /// (module blocks narrowing root module calls' `for_each`). Relative
    /// paths terraform resolves (local module sources inside the root,
    /// `path.module`, tfvars files) resolve there as in the root; the
    /// caller makes sure nothing reads the absolute path. `None`: the
    /// user's directory, as every other command.
    pub fn narrow(&self, modules: Option<&str>) -> Result<(), TerraformError> {
        let mut slot = self.cone_root.lock().unwrap_or_else(|e| e.into_inner());
        let Some(modules) = modules else {
            *slot = None;
            return Ok(());
        };
        let dir = self.dir.path().join("config");
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err(format!("cannot remove {}", dir.display())))?;
        }
        fs::create_dir(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let entries = fs::read_dir(&self.root)
            .map_err(io_err(format!("cannot read {}", self.root.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot read {}", self.root.display())))?;
            let name = entry.file_name();
            let text = name.to_string_lossy();
            // Ours (the shared override, its temporary copies) and local
            // state, which terraform must never write through a link.
            if text == OVERRIDE_FILE
                || text.starts_with(&format!(".{OVERRIDE_FILE}"))
                || text.starts_with("terraform.tfstate")
            {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), dir.join(&name))
                .map_err(io_err(format!("cannot link {}", entry.path().display())))?;
        }
        write_new(
            &dir.join(OVERRIDE_FILE),
            format!("{OVERRIDE_CONTENT}{modules}").as_bytes(),
        )?;
        *slot = Some(dir);
        Ok(())
    }

    /// [`RunDir::command`] where the cone is planned and applied: the
    /// narrowed configuration's directory where there is one (see
    /// [`RunDir::narrow`]).
    pub fn cone_command(&self, tf: &Terraform) -> Invocation {
        let narrowed = self
            .cone_root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match narrowed {
            Some(dir) => self.command(tf).current_dir(dir),
            None => self.command(tf),
        }
    }

    /// `terraform init` on our backend without touching the user's lock file.
    ///
    /// Its stdout is shown only when it fails; errors (stderr) pass through.
    pub async fn init(&self, tf: &Terraform) -> Result<(), TerraformError> {
        let mut backend_config = std::ffi::OsString::from("-backend-config=path=");
        backend_config.push(&self.state_path);
        let run = self
            .command_before_state(tf)
            .env_remove("TF_CLI_ARGS_init")
            .args(["init", "-input=false", "-lockfile=readonly"])
            .arg(backend_config)
            .stdout(Output::Capture)
            .quiet();
        let command = run.describe();
        let done = run.run().await?;
        if !done.success() {
            match without_init_preamble(&done.stderr) {
                // A configuration that does not load: its errors, once, as
                // terraform's plan shows them (not init's preamble and
                // progress, which the user did not ask for).
                Some(errors) => tf.ui().replay(&[], &errors),
                // Terraform's explanation, as a failed `init` shows it.
                None => tf.ui().replay(&done.stdout, &done.stderr),
            }
            return Err(TerraformError::Failed {
                command,
                code: done.code,
            });
        }
        tf.ui().replay(&[], &done.stderr);
        Ok(())
    }

    /// Makes `init` unnecessary: the backend cache gets terraform's hash of
    /// our backend block (learned from an earlier `init` by the same
    /// terraform version, see [`RunDir::backend_hash`]); providers and
    /// modules are the user's, linked. Commands then run as after `init`.
    pub fn skip_init(&self, hash: u64) -> Result<(), TerraformError> {
        let path = self.data_dir.join("terraform.tfstate");
        let bytes = backend_cache(&self.state_path, hash)?;
        fs::write(&path, bytes).map_err(io_err(format!("cannot write {}", path.display())))
    }

    /// The backend hash `init` wrote, once it ran.
    pub fn backend_hash(&self) -> Option<u64> {
        let bytes = fs::read(self.data_dir.join("terraform.tfstate")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v["backend"]["hash"].as_u64().filter(|h| *h != 0)
    }

    /// Replaces the state terraform will see (e.g. a fresher snapshot taken
    /// under the lock).
    pub fn write_state(&self, state: &State) -> Result<(), TerraformError> {
        let what = || format!("cannot write {}", self.state_path.display());
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.state_path)
            .map_err(io_err(what()))?;
        f.write_all(&state.to_json()).map_err(io_err(what()))?;
        self.state_written.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The run's state changed (read again under the lock): it is written
    /// again when terraform next needs it ([`RunDir::ensure_state`]).
    pub fn state_changed(&self) {
        self.state_written.store(false, Ordering::Relaxed);
    }

    /// Writes `state` unless the run's state is written already (see
    /// [`Layout::run_dir_deferred`]).
    pub fn ensure_state(&self, state: &State) -> Result<(), TerraformError> {
        match self.state_written.load(Ordering::Relaxed) {
            true => Ok(()),
            false => self.write_state(state),
        }
    }

    /// `terraform show -json` of the plan file at `plan_file`, parsed.
    pub async fn show_plan(
        &self,
        tf: &Terraform,
        plan_file: &Path,
    ) -> Result<super::Plan, TerraformError> {
        let shown = self
            .command(tf)
            .args(["show", "-json"])
            .own()
            .arg(plan_file)
            .stdout(Output::Capture)
            .run_ok()
            .await?;
        Ok(super::plan::parse(&shown.stdout)?)
    }

    /// The state terraform left in [`RunDir::state_path`], parsed.
    pub fn read_state(&self) -> Result<State, TerraformError> {
        let bytes = fs::read(&self.state_path).map_err(io_err(format!(
            "cannot read the state terraform wrote to {}",
            self.state_path.display()
        )))?;
        tfstate::parse(&bytes).map_err(|source| TerraformError::State {
            path: self.state_path.clone(),
            source,
        })
    }
}

/// Writes a new file only its owner can read (state holds secrets).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// [`write_private`], with the error terraform's runs report.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), TerraformError> {
    write_private(path, bytes).map_err(io_err(format!("cannot write {}", path.display())))
}

/// Writes the backend cache (`TF_DATA_DIR/terraform.tfstate`, format 3) that
/// `init` finds when the backend was configured before: a local backend on
/// our state. The hash is left 0; init recomputes it without migrating
/// because the effective configuration matches.
fn seed_backend_cache(data_dir: &Path, state_path: &Path) -> Result<(), TerraformError> {
    write_new(
        &data_dir.join("terraform.tfstate"),
        &backend_cache(state_path, 0)?,
    )
}

/// The backend cache `init` writes for our local backend at `state_path`;
/// `hash` is terraform's hash of the backend block.
fn backend_cache(state_path: &Path, hash: u64) -> Result<Vec<u8>, TerraformError> {
    let path = state_path.to_str().ok_or_else(|| TerraformError::Io {
        what: format!("the temp dir path {} is not UTF-8", state_path.display()),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let cache = serde_json::json!({
        "version": 3,
        "serial": 0,
        "lineage": "stategraph",
        "backend": {
            "type": "local",
            "config": { "path": path, "workspace_dir": null },
            "hash": hash
        }
    });
    Ok(serde_json::to_vec_pretty(&cache).expect("static JSON"))
}

/// `modules/`: a copy of `modules.json` (init rewrites it) and a symlink per
/// installed module.
fn link_modules(from: &Path, to: &Path) -> Result<(), TerraformError> {
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(());
    };
    fs::create_dir(to).map_err(io_err(format!("cannot create {}", to.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("cannot read {}", from.display())))?;
        let name = entry.file_name();
        let target = to.join(&name);
        if name == "modules.json" {
            fs::copy(entry.path(), &target)
                .map_err(io_err(format!("cannot copy {}", entry.path().display())))?;
        } else {
            std::os::unix::fs::symlink(entry.path(), &target)
                .map_err(io_err(format!("cannot link {}", target.display())))?;
        }
    }
    Ok(())
}

/// Recreates `from` as real directories down to `depth`, with symlinks
/// there (providers: host/namespace/type/version/os_arch).
fn link_tree(from: &Path, to: &Path, depth: usize) -> Result<(), TerraformError> {
    if depth == 0 {
        return std::os::unix::fs::symlink(from, to)
            .map_err(io_err(format!("cannot link {}", to.display())));
    }
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(());
    };
    fs::create_dir_all(to).map_err(io_err(format!("cannot create {}", to.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("cannot read {}", from.display())))?;
        let is_dir = entry.path().is_dir();
        if is_dir {
            link_tree(&entry.path(), &to.join(entry.file_name()), depth - 1)?;
        } else {
            std::os::unix::fs::symlink(entry.path(), to.join(entry.file_name()))
                .map_err(io_err("cannot link a provider file"))?;
        }
    }
    Ok(())
}

/// The shared override file of one directory, held for one run.
#[derive(Debug)]
struct OverrideGuard {
    override_path: PathBuf,
    lock: Option<Flock<File>>,
    /// The write end of the watcher's stdin: when it closes (this run ends
    /// or dies), the watcher removes the file if no run uses it.
    watcher: Option<std::process::ChildStdin>,
}

impl OverrideGuard {
    /// Takes the shared lock (waiting for a run that is removing the file),
    /// starts the watcher, then makes sure the override file is in place.
    fn acquire(
        root: &Path,
        temp_dir: &Path,
        watcher: Option<&Path>,
    ) -> Result<OverrideGuard, TerraformError> {
        let lock_path = lock_path(root, temp_dir);
        let file = open_lock_file(&lock_path)?;
        let lock =
            Flock::lock(file, FlockArg::LockShared).map_err(|(_, errno)| TerraformError::Io {
                what: format!("cannot lock {}", lock_path.display()),
                source: errno.into(),
            })?;
        let override_path = root.join(OVERRIDE_FILE);
        let guard = OverrideGuard {
            override_path,
            lock: Some(lock),
            watcher: watcher.and_then(|bin| start_watcher(bin, root, &lock_path)),
        };
        if fs::read(&guard.override_path).ok().as_deref() != Some(OVERRIDE_CONTENT.as_bytes()) {
            // Atomic replace: a terraform of a concurrent run reading the
            // directory sees the old or the new file, both identical.
            let tmp = root.join(format!(".{OVERRIDE_FILE}.{}.tmp", std::process::id()));
            let what = || format!("cannot write {}", guard.override_path.display());
            fs::write(&tmp, OVERRIDE_CONTENT).map_err(io_err(what()))?;
            if let Err(e) = fs::rename(&tmp, &guard.override_path) {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(what())(e));
            }
        }
        Ok(guard)
    }

    fn active(&self) -> bool {
        self.lock.is_some()
    }
}

impl Drop for OverrideGuard {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else { return };
        // Upgrading is not atomic (flock(2)); either way we hold no lock after this.
        if lock.relock(FlockArg::LockExclusiveNonblock).is_ok() {
            let _ = fs::remove_file(&self.override_path);
        }
        drop(lock);
        // The watcher's stdin closes: it looks once more and ends.
        drop(self.watcher.take());
    }
}

/// Starts `bin` as the watcher of `root`'s override file (see the module
/// docs) and returns its stdin; `None` if it cannot start (then a killed
/// run's file is removed by the next run, as without one). The watcher
/// detaches at once (see [`watch_override`]): it is no child of this run.
fn start_watcher(bin: &Path, root: &Path, lock_path: &Path) -> Option<std::process::ChildStdin> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(bin)
        .arg(WATCH_ARG)
        .arg(root)
        .arg(lock_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Not in the terminal's process group: a Ctrl-C must not stop it.
        .process_group(0)
        .spawn()
        .ok()?;
    let stdin = child.stdin.take();
    // The process started exits once it has forked the watcher.
    child.wait().ok()?.success().then_some(stdin)?
}

/// The watcher's work (`stategraph WATCH_ARG ROOT LOCK_PATH`): waits until
/// the run that started it closes its stdin or dies, then removes the
/// override file of `root` unless another run holds the lock at
/// `lock_path`.
pub fn watch_override(root: &Path, lock_path: &Path) {
    // Detach: the run that started this process waits for it to exit, and
    // the watcher goes on as an orphan (no child of the run, reaped by init).
    // SAFETY: single-threaded here (before any runtime or thread starts).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {}
        Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_) => return,
    }
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    // A killed run's pipe may close before the kernel drops its shared
    // lock: try for a moment before concluding that another run holds the
    // directory (then that run removes the file when it ends).
    for _ in 0..100 {
        let Ok(file) = open_lock_file(lock_path) else {
            return;
        };
        if let Ok(_exclusive) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            let _ = fs::remove_file(root.join(OVERRIDE_FILE));
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `<tmp>/stategraph-override-<sha256(dir)[..16]>.lock`, outside the user's
/// directory. Never removed: removing it would race with a run opening it.
fn lock_path(root: &Path, temp_dir: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(root.as_os_str().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    temp_dir.join(format!("stategraph-override-{hex}.lock"))
}

fn open_lock_file(path: &Path) -> Result<File, TerraformError> {
    let open = |write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o666)
            // Not a symlink planted in a shared temp dir.
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(path)
    };
    open(true).or_else(|_| open(false)).map_err(io_err(format!(
        "cannot open the lock file {}",
        path.display()
    )))
}

/// The first line of the diagnostic `init` adds before a configuration's
/// own errors.
const INIT_PREAMBLE: &str = "Terraform encountered problems during initialisation";

/// `init`'s stderr without its preamble diagnostic, when it has one (the
/// configuration did not load); `None` otherwise.
fn without_init_preamble(stderr: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(stderr);
    let at = text.find(INIT_PREAMBLE)?;
    // Boxed diagnostics (colour): from the `╷` that opens it to the line
    // of the `╵` that closes it. Plain ones: up to the next diagnostic.
    let (start, end) = match (text[..at].rfind('╷'), text[at..].find('╵')) {
        (Some(open), Some(close)) => {
            let start = text[..open].rfind('\n').map_or(0, |i| i + 1);
            let close = at + close;
            let end = text[close..]
                .find('\n')
                .map_or(text.len(), |i| close + i + 1);
            (start, end)
        }
        _ => {
            let start = text[..at].rfind("Error: ")?;
            let next = ["\nError: ", "\nWarning: "]
                .iter()
                .filter_map(|m| text[at..].find(m))
                .min()
                .map_or(text.len(), |i| at + i + 1);
            (start, next)
        }
    };
    Some(format!("{}{}", &text[..start], &text[end..]).into_bytes())
}

#[cfg(test)]
mod tests {

    #[test]
    fn inits_preamble_is_dropped_and_the_configurations_errors_kept() {
        let boxed = "\x1b[31m╷\x1b[0m\n\x1b[31m│\x1b[0m Error: Terraform encountered problems during initialisation, including problems\n\x1b[31m│\x1b[0m with the configuration.\n\x1b[31m╵\x1b[0m\n\x1b[31m╷\x1b[0m\n\x1b[31m│\x1b[0m Error: Unclosed configuration block\n\x1b[31m╵\x1b[0m\n";
        let kept = String::from_utf8(without_init_preamble(boxed.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            kept,
            "\x1b[31m╷\x1b[0m\n\x1b[31m│\x1b[0m Error: Unclosed configuration block\n\x1b[31m╵\x1b[0m\n"
        );
        let plain = "\nError: Terraform encountered problems during initialisation, including problems\nwith the configuration.\n\n\nError: Unclosed configuration block\n\n  on main.tf line 1\n";
        let kept = String::from_utf8(without_init_preamble(plain.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            kept,
            "\nError: Unclosed configuration block\n\n  on main.tf line 1\n"
        );
        assert_eq!(
            without_init_preamble(b"Error: Failed to query available provider packages"),
            None
        );
    }
    use super::*;

    #[test]
    fn a_killed_process_not_yet_reaped_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = child.id() as i32;
        assert!(is_alive(pid));
        child.kill().unwrap();
        // Not reaped yet: a zombie, as under an init that never reaps.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_alive(pid), "a zombie counts as alive");
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }
}
