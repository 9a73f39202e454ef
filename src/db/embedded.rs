//! The embedded default database: a private PostgreSQL cluster under the
//! data directory, created once with the machine's PostgreSQL server
//! binaries, started on demand and left running for later runs.
//!
//! This module owns everything under `EmbeddedConfig::data_dir`: the cluster
//! (`pg/`), its socket directory (`run/`), its log (`postgresql.log`) and the
//! lock file that serializes creation and start across processes. It is the
//! only place that spawns `initdb`, `pg_ctl` and `postgres`. It must never
//! make the server listen on TCP, never run PostgreSQL as root (it drops to
//! `EmbeddedConfig::run_as`), never run initdb over an existing cluster, and
//! never turn fsync off: this cluster holds the user's real state.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use nix::unistd::{Gid, Uid, User};
use serde::Serialize;

use crate::db::pool::{PgTarget, TlsMode};
use crate::settings::EmbeddedConfig;
use crate::ui::{self, Ui};

/// The superuser role and the database stategraph uses in the cluster.
const ROLE: &str = "stategraph";
const DATABASE: &str = "stategraph";
/// The port only names the socket file (`.s.PGSQL.5432`): nothing listens on TCP.
const PORT: u16 = 5432;
/// Longest unix socket path the kernel accepts (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// libpq variables that would change what the server or pg_ctl does.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGPORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGOPTIONS",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSERVICE",
    "PGSSLMODE",
    "PGTZ",
    "PGCLIENTENCODING",
    "PGCTLTIMEOUT",
];

/// What went wrong with the embedded cluster, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: stategraph needs \
them for its embedded database.\n\n\
Install them with ./install.sh (it runs `apt-get install postgresql`), or set STATEGRAPH_PG_BIN \
to the directory holding them, or use a PostgreSQL server with --database-url \
(STATEGRAPH_DATABASE_URL)."
    )]
    NoServerBinaries,

    #[error(
        "no database is configured, and this looks like a CI runner (CI is set): stategraph \
will not create its embedded PostgreSQL here.\n\n\
A runner thrown away after the job would take the state with it, and the next job would \
plan every resource as new. Point every runner at one shared PostgreSQL with --database-url \
or STATEGRAPH_DATABASE_URL (or the libpq PG* variables). To create the embedded cluster on \
this runner anyway (a runner that keeps {} between jobs), set STATEGRAPH_ALLOW_EMBEDDED=1.",
        data_dir.display()
    )]
    CiRunner { data_dir: PathBuf },

    #[error(
        "STATEGRAPH_PG_BIN={}: no `{missing}` there.\n\n\
Set STATEGRAPH_PG_BIN to the directory holding initdb, pg_ctl and postgres \
(e.g. /usr/lib/postgresql/15/bin), or unset it to search the usual places.",
        dir.display()
    )]
    IncompleteBinDir { dir: PathBuf, missing: &'static str },

    #[error(
        "PostgreSQL would run as user `{user}`, which does not exist on this machine.\n\n\
Create it (`useradd --system {user}`, or install the postgresql package, which creates \
`postgres`), or set STATEGRAPH_PG_USER to an existing unprivileged user."
    )]
    NoSuchUser { user: String },

    #[error(
        "PostgreSQL refuses to run as root, and STATEGRAPH_PG_USER names no unprivileged user.\n\n\
Set STATEGRAPH_PG_USER to an unprivileged user (e.g. postgres), or use --database-url."
    )]
    RootServer,

    #[error(
        "PostgreSQL runs as user `{user}`, who cannot enter {} (mode {mode:04o}), so it cannot \
reach the embedded cluster under {}.\n\n\
Choose a data directory that user can reach with STATEGRAPH_DATA_DIR (root's default is \
/var/lib/stategraph), or let it through with `chmod o+x {}`.",
        dir.display(), data_dir.display(), dir.display()
    )]
    Unreachable {
        user: String,
        dir: PathBuf,
        data_dir: PathBuf,
        mode: u32,
    },

    #[error(
        "the socket path {} is longer than the {MAX_SOCKET_PATH} bytes a unix socket allows.\n\n\
Choose a shorter STATEGRAPH_DATA_DIR.",
        path.display()
    )]
    SocketPathTooLong { path: PathBuf },

    #[error(
        "{} exists but is not a PostgreSQL cluster (no PG_VERSION).\n\n\
Move it away; stategraph creates its cluster there on first use.",
        dir.display()
    )]
    NotACluster { dir: PathBuf },

    #[error(
        "the embedded cluster in {} belongs to user `{owner}`, but PostgreSQL would run as `{user}`.\n\n\
Set STATEGRAPH_PG_USER={owner}, or give the cluster to {user} (`chown -R {user} {}`).",
        dir.display(), dir.display()
    )]
    WrongOwner {
        dir: PathBuf,
        owner: String,
        user: String,
    },

    #[error(
        "the embedded cluster in {} was created by PostgreSQL {cluster}, but the server binaries in {} \
are PostgreSQL {binaries}.\n\n\
Install PostgreSQL {cluster}'s server binaries and point STATEGRAPH_PG_BIN at them, or move the \
cluster away (after a pg_dump) to let stategraph create a new one.",
        dir.display(), bin_dir.display()
    )]
    VersionMismatch {
        dir: PathBuf,
        cluster: String,
        bin_dir: PathBuf,
        binaries: String,
    },

    #[error(
        "the embedded PostgreSQL did not start: {detail}\n\nLast lines of {}:\n{tail}",
        log.display()
    )]
    StartFailed {
        detail: String,
        log: PathBuf,
        tail: String,
    },
}

/// What `stategraph db status` reports about the embedded cluster.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedStatus {
    /// The data directory (`STATEGRAPH_DATA_DIR` or its default).
    pub data_dir: PathBuf,
    /// Whether a complete cluster exists in `data_dir/pg`.
    pub exists: bool,
    /// Whether its server runs and accepts connections on the socket.
    pub running: bool,
    /// The postmaster's pid when running.
    pub pid: Option<u32>,
    /// The directory of the unix socket (the only way in).
    pub socket_dir: PathBuf,
    /// The cluster's PostgreSQL major version (`PG_VERSION`), when it exists.
    pub version: Option<String>,
    /// The user the server runs as.
    pub server_user: String,
}

/// Creates the cluster on first use and starts it if it is not running, then
/// returns how to reach it. Prints nothing when it was already running.
pub async fn ensure_running(cfg: &EmbeddedConfig, ui: &Ui) -> Result<PgTarget> {
    let layout = Layout::new(&cfg.data_dir)?;
    if !probe(&layout).ready {
        let cfg = cfg.clone();
        let ui = *ui;
        let locked_layout = layout.clone();
        tokio::task::spawn_blocking(move || start_locked(&cfg, &locked_layout, &ui))
            .await
            .map_err(|e| anyhow!("the embedded PostgreSQL start was interrupted: {e}"))??;
    }
    Ok(layout.target())
}

/// Reports whether the cluster exists and runs, without changing anything.
pub fn status(cfg: &EmbeddedConfig) -> Result<EmbeddedStatus> {
    let layout = Layout::new(&cfg.data_dir)?;
    let version = cluster_version(&layout.cluster_dir);
    let exists = version.is_some();
    let probe = if exists {
        probe(&layout)
    } else {
        Probe::default()
    };
    let server_user = match fs::metadata(&layout.cluster_dir) {
        Ok(meta) if exists => user_name(Uid::from_raw(meta.uid())),
        _ => match &cfg.run_as {
            Some(name) => name.clone(),
            None => user_name(nix::unistd::geteuid()),
        },
    };
    Ok(EmbeddedStatus {
        data_dir: layout.data_dir.clone(),
        exists,
        running: probe.running,
        pid: probe.running.then_some(probe.pid).flatten(),
        socket_dir: layout.socket_dir.clone(),
        version,
        server_user,
    })
}

/// Starts the cluster (creating it on first use, even in CI: it was asked
/// for) and reports its status.
pub async fn start(cfg: &EmbeddedConfig, ui: &Ui) -> Result<EmbeddedStatus> {
    let asked = EmbeddedConfig {
        refuse_create: false,
        ..cfg.clone()
    };
    ensure_running(&asked, ui).await?;
    status(cfg)
}

/// Stops the cluster with `pg_ctl stop -m fast`; a stopped cluster is left as it is.
pub async fn stop(cfg: &EmbeddedConfig, ui: &Ui) -> Result<EmbeddedStatus> {
    let cfg_owned = cfg.clone();
    let ui = *ui;
    tokio::task::spawn_blocking(move || stop_locked(&cfg_owned, &ui))
        .await
        .map_err(|e| anyhow!("stopping the embedded PostgreSQL was interrupted: {e}"))??;
    status(cfg)
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `explicit`
/// (STATEGRAPH_PG_BIN), else the directory `initdb` on `search_path` (PATH)
/// resolves to, else the newest `/usr/lib/postgresql/*/bin` (or
/// `/usr/pgsql-*/bin`). The test harness finds its binaries the same way.
pub fn find_pg_bin(explicit: Option<&Path>, search_path: Option<&str>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        if let Some(missing) = missing_server_binary(dir) {
            return Err(EmbeddedError::IncompleteBinDir {
                dir: dir.to_owned(),
                missing,
            }
            .into());
        }
        return Ok(dir.to_owned());
    }
    if let Some(initdb) = crate::settings::find_on_path("initdb", search_path) {
        // Follow symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb)
        // so pg_ctl and postgres come from the same installation.
        if let Some(dir) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned))
        {
            if missing_server_binary(&dir).is_none() {
                return Ok(dir);
            }
        }
    }
    newest_installed(&[Path::new("/usr/lib/postgresql"), Path::new("/usr")])
        .ok_or_else(|| EmbeddedError::NoServerBinaries.into())
}

/// The first of initdb, pg_ctl, postgres that `dir` lacks.
fn missing_server_binary(dir: &Path) -> Option<&'static str> {
    ["initdb", "pg_ctl", "postgres"]
        .into_iter()
        .find(|name| !is_executable(&dir.join(name)))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The bin directory of the newest complete installation under the given
/// roots: `<root>/<version>/bin` (Debian) or `<root>/pgsql-<version>/bin` (RHEL).
fn newest_installed(roots: &[&Path]) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    for root in roots {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let version = name.strip_prefix("pgsql-").unwrap_or(name);
            let Some(key) = version_key(version) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if missing_server_binary(&bin).is_none() {
                found.push((key, bin));
            }
        }
    }
    found
        .into_iter()
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, dir)| dir)
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; `None` for anything else.
fn version_key(s: &str) -> Option<Vec<u32>> {
    s.split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u32>>>()
}

/// The major version in `postgres --version` output:
/// `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` -> `15`.
fn major_version(version_output: &str) -> Option<String> {
    let rest = version_output.split(") ").nth(1)?;
    let number = rest.split_whitespace().next()?;
    let parts: Vec<&str> = number.split('.').collect();
    let first: u32 = parts.first()?.parse().ok()?;
    if first >= 10 {
        Some(first.to_string())
    } else {
        Some(format!("{first}.{}", parts.get(1)?))
    }
}

/// The major version of the binaries in `bin`.
fn binaries_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin.join("postgres"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.join("postgres").display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    major_version(&text).ok_or_else(|| {
        anyhow!(
            "cannot read the version of {}: {:?}",
            bin.join("postgres").display(),
            text.trim()
        )
    })
}

/// The cluster's major version, if `dir` holds a complete cluster.
fn cluster_version(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Server binaries matching the existing cluster's version: a cluster made by
/// PostgreSQL 14 needs 14's binaries even if 15 is also installed.
fn pg_bin_for(cfg: &EmbeddedConfig, layout: &Layout) -> Result<(PathBuf, String)> {
    let found = find_pg_bin(cfg.pg_bin.as_deref(), cfg.search_path.as_deref())?;
    let found_version = binaries_version(&found)?;
    let Some(cluster) = cluster_version(&layout.cluster_dir) else {
        return Ok((found, found_version));
    };
    if cluster == found_version {
        return Ok((found, found_version));
    }
    if cfg.pg_bin.is_none() {
        for candidate in [
            PathBuf::from(format!("/usr/lib/postgresql/{cluster}/bin")),
            PathBuf::from(format!("/usr/pgsql-{cluster}/bin")),
        ] {
            if missing_server_binary(&candidate).is_none() {
                return Ok((candidate, cluster));
            }
        }
    }
    Err(EmbeddedError::VersionMismatch {
        dir: layout.cluster_dir.clone(),
        cluster,
        bin_dir: found,
        binaries: found_version,
    }
    .into())
}

/// Where the cluster's pieces live under the data directory.
#[derive(Debug, Clone)]
struct Layout {
    data_dir: PathBuf,
    /// The cluster (PGDATA), owned by the server user, mode 0700.
    cluster_dir: PathBuf,
    /// initdb writes here; renamed to `cluster_dir` once complete, so a
    /// half-made cluster is never mistaken for a real one.
    staging_dir: PathBuf,
    /// The unix socket's directory, owned by the server user, mode 0700.
    socket_dir: PathBuf,
    log_file: PathBuf,
    lock_file: PathBuf,
}

impl Layout {
    fn new(data_dir: &Path) -> Result<Layout> {
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
        let socket_dir = data_dir.join("run");
        let socket = socket_dir.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(EmbeddedError::SocketPathTooLong { path: socket }.into());
        }
        Ok(Layout {
            cluster_dir: data_dir.join("pg"),
            staging_dir: data_dir.join("pg.creating"),
            socket_dir,
            log_file: data_dir.join("postgresql.log"),
            lock_file: data_dir.join("embedded.lock"),
            data_dir,
        })
    }

    fn socket(&self) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{PORT}"))
    }

    fn pid_file(&self) -> PathBuf {
        self.cluster_dir.join("postmaster.pid")
    }

    fn target(&self) -> PgTarget {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(PORT)
            .user(ROLE)
            .dbname(DATABASE);
        PgTarget::new(config, TlsMode::Disable, None)
    }
}

/// What the pid file and the socket say about the server.
#[derive(Debug, Default, Clone, Copy)]
struct Probe {
    /// The pid in `postmaster.pid`, if the file exists.
    pid: Option<u32>,
    /// That process exists.
    alive: bool,
    /// It exists and something accepts connections on our socket.
    running: bool,
    /// Running, and the pid file says `ready` (not starting or stopping).
    ready: bool,
}

/// Checks the server without trusting the pid file alone: after a crash or a
/// reboot the file stays behind, and its pid may belong to another process.
fn probe(layout: &Layout) -> Probe {
    let Ok(text) = fs::read_to_string(layout.pid_file()) else {
        return Probe::default();
    };
    let pid_file = PidFile::parse(&text);
    let alive = pid_file.pid.is_some_and(process_exists);
    let running = alive && UnixStream::connect(layout.socket()).is_ok();
    Probe {
        pid: pid_file.pid,
        alive,
        running,
        ready: running && pid_file.status.as_deref() == Some("ready"),
    }
}

/// The parts of `postmaster.pid` we read: line 1 the pid, line 8 the status.
#[derive(Debug, PartialEq)]
struct PidFile {
    pid: Option<u32>,
    status: Option<String>,
}

impl PidFile {
    fn parse(text: &str) -> PidFile {
        let lines: Vec<&str> = text.lines().collect();
        PidFile {
            pid: lines
                .first()
                .and_then(|l| l.trim().parse().ok())
                .filter(|&p| p > 0),
            status: lines
                .get(7)
                .map(|l| l.trim().to_owned())
                .filter(|s| !s.is_empty()),
        }
    }
}

fn process_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// The OS user the server runs as, and whether we must switch to it.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
    /// We are root and must drop to this user for every server command.
    switch: bool,
}

impl ServerUser {
    fn resolve(cfg: &EmbeddedConfig) -> Result<ServerUser> {
        let euid = nix::unistd::geteuid();
        let user = match &cfg.run_as {
            Some(name) => User::from_name(name)
                .with_context(|| format!("cannot look up user `{name}`"))?
                .ok_or_else(|| EmbeddedError::NoSuchUser { user: name.clone() })?,
            None => User::from_uid(euid)
                .context("cannot look up the current user")?
                .ok_or_else(|| anyhow!("the current uid {euid} has no passwd entry"))?,
        };
        if user.uid.is_root() {
            return Err(EmbeddedError::RootServer.into());
        }
        if user.uid != euid && !euid.is_root() {
            anyhow::bail!(
                "cannot run PostgreSQL as `{}`: only root can switch users. Unset STATEGRAPH_PG_USER.",
                user.name
            );
        }
        Ok(ServerUser {
            switch: user.uid != euid,
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
        })
    }

    /// A command for a PostgreSQL program, run as this user, with no shell
    /// in between and no inherited libpq variables.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir("/").stdin(Stdio::null());
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        if self.switch {
            // std drops supplementary groups (setgroups(0)) before setuid as root.
            cmd.uid(self.uid.as_raw())
                .gid(self.gid.as_raw())
                .env("HOME", &self.home)
                .env("USER", &self.name)
                .env("LOGNAME", &self.name);
        }
        cmd
    }

    /// Hands a path we created as root to the server user.
    fn own(&self, path: &Path) -> Result<()> {
        if self.switch {
            nix::unistd::chown(path, Some(self.uid), Some(self.gid))
                .with_context(|| format!("cannot give {} to user {}", path.display(), self.name))?;
        }
        Ok(())
    }

    /// Whether this user may enter a directory with these permissions (ACLs aside).
    fn can_traverse(&self, meta: &fs::Metadata) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == self.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}

fn user_name(uid: Uid) -> String {
    match User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Runs a server program and returns its output, or an error quoting its stderr.
fn run(mut cmd: Command, what: &str) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?} ({what})", cmd.get_program()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        return Err(anyhow!(
            "{what} failed ({}):\n{}",
            out.status,
            text.trim_end()
        ));
    }
    Ok(out)
}

/// Creates the data directory and checks the server user can reach it.
fn prepare_data_dir(layout: &Layout, user: &ServerUser) -> Result<()> {
    let dir = &layout.data_dir;
    // As root the server user must traverse (not list) our directory.
    let mode = if user.switch { 0o711 } else { 0o700 };
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    if !user.switch {
        return Ok(());
    }
    let meta = fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !user.can_traverse(&meta) {
        // The data directory is stategraph's own: let the server user through.
        fs::set_permissions(
            dir,
            fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o001),
        )
        .with_context(|| format!("cannot let user {} into {}", user.name, dir.display()))?;
    }
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        if !user.can_traverse(&meta) {
            return Err(EmbeddedError::Unreachable {
                user: user.name.clone(),
                dir: ancestor.to_owned(),
                data_dir: dir.clone(),
                mode: meta.mode() & 0o7777,
            }
            .into());
        }
    }
    Ok(())
}

/// The exclusive lock on the data directory, released when dropped (or when
/// the process dies: flock locks belong to the open file).
type DirLock = nix::fcntl::Flock<File>;

fn lock_data_dir(layout: &Layout) -> Result<DirLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&layout.lock_file)
        .with_context(|| format!("cannot open the lock file {}", layout.lock_file.display()))?;
    // nix's flock rather than File::lock (Rust 1.89) keeps the crate's MSRV.
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow!("cannot lock {}: {errno}", layout.lock_file.display()))
}

/// The locked part of [`ensure_running`]: create if missing, start if stopped.
fn start_locked(cfg: &EmbeddedConfig, layout: &Layout, ui: &Ui) -> Result<()> {
    if cfg.refuse_create && cluster_version(&layout.cluster_dir).is_none() {
        return Err(EmbeddedError::CiRunner {
            data_dir: layout.data_dir.clone(),
        }
        .into());
    }
    // Find the binaries before creating anything, so a machine without
    // PostgreSQL gets the install hint and no stray directories.
    find_pg_bin(cfg.pg_bin.as_deref(), cfg.search_path.as_deref())?;
    let user = ServerUser::resolve(cfg)?;
    prepare_data_dir(layout, &user)?;
    let _lock = lock_data_dir(layout)?;
    // Another process may have done the work while we waited for the lock.
    if probe(layout).ready {
        return Ok(());
    }
    let (bin, version) = pg_bin_for(cfg, layout)?;
    if cluster_version(&layout.cluster_dir).is_none() {
        if layout.cluster_dir.exists() {
            return Err(EmbeddedError::NotACluster {
                dir: layout.cluster_dir.clone(),
            }
            .into());
        }
        create_cluster(layout, &user, &bin, &version, ui)?;
    } else {
        check_owner(layout, &user)?;
    }
    start_server(layout, &user, &bin, ui)
}

fn check_owner(layout: &Layout, user: &ServerUser) -> Result<()> {
    let meta = fs::metadata(&layout.cluster_dir)
        .with_context(|| format!("cannot read {}", layout.cluster_dir.display()))?;
    if meta.uid() != user.uid.as_raw() {
        return Err(EmbeddedError::WrongOwner {
            dir: layout.cluster_dir.clone(),
            owner: user_name(Uid::from_raw(meta.uid())),
            user: user.name.clone(),
        }
        .into());
    }
    Ok(())
}

/// initdb into the staging directory, configure, create the database, then
/// rename into place: the cluster directory only ever holds a whole cluster.
fn create_cluster(
    layout: &Layout,
    user: &ServerUser,
    bin: &Path,
    version: &str,
    ui: &Ui,
) -> Result<()> {
    if layout.staging_dir.exists() {
        ui.warn(format!(
            "a previous creation of the embedded PostgreSQL cluster did not finish; removing {} and starting over",
            layout.staging_dir.display()
        ));
        fs::remove_dir_all(&layout.staging_dir)
            .with_context(|| format!("cannot remove {}", layout.staging_dir.display()))?;
    }
    let step = ui.step(format!(
        "Creating the embedded PostgreSQL {version} cluster"
    ));
    match build_cluster(layout, user, bin) {
        Ok(()) => {
            let took = ui::duration(step.elapsed());
            step.done(format!(
                "created in {} (socket {}) in {took}",
                layout.cluster_dir.display(),
                layout.socket_dir.display(),
            ));
            Ok(())
        }
        Err(e) => {
            step.fail();
            Err(e.context(format!(
                "cannot create the embedded PostgreSQL cluster in {}",
                layout.cluster_dir.display()
            )))
        }
    }
}

fn build_cluster(layout: &Layout, user: &ServerUser, bin: &Path) -> Result<()> {
    let staging = &layout.staging_dir;
    DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    user.own(staging)?;

    let mut initdb = user.command(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(staging)
        // Trust on the socket only; the socket directory (0700, the server
        // user's) is the access control. TCP is refused even if enabled later.
        .args([
            "--auth-local=trust",
            "--auth-host=reject",
            "-U",
            ROLE,
            "-E",
            "UTF8",
        ])
        .arg(format!("--locale={}", initdb_locale()));
    run(initdb, "initdb")?;

    let conf = staging.join("postgresql.conf");
    let mut file = OpenOptions::new()
        .append(true)
        .open(&conf)
        .with_context(|| format!("cannot open {}", conf.display()))?;
    file.write_all(server_settings(&layout.socket_dir).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", conf.display()))?;

    // Create the database before the cluster becomes visible, with the
    // server in single-user mode: no socket, no second process.
    let mut single = user.command(bin.join("postgres"));
    single
        .args(["--single", "-D"])
        .arg(staging)
        .args(["-c", "exit_on_error=on", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = single.spawn().context("cannot run postgres --single")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("CREATE DATABASE {DATABASE};\n").as_bytes())
            .context("cannot talk to postgres --single")?;
    }
    let out = child.wait_with_output().context("postgres --single")?;
    if !out.status.success() {
        return Err(anyhow!(
            "creating the {DATABASE} database failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }

    fs::rename(staging, &layout.cluster_dir).with_context(|| {
        format!(
            "cannot rename {} to {}",
            staging.display(),
            layout.cluster_dir.display()
        )
    })?;
    // Make the rename durable: fsync stays on for this cluster's whole life.
    File::open(&layout.data_dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", layout.data_dir.display()))?;
    Ok(())
}

/// The lines appended to postgresql.conf.
fn server_settings(socket_dir: &Path) -> String {
    let socket_dir = socket_dir.to_string_lossy().replace('\'', "''");
    format!(
        "\n# Written by stategraph: its embedded cluster is reachable only through\n\
# a unix socket in a private directory.\n\
listen_addresses = ''\n\
port = {PORT}\n\
unix_socket_directories = '{socket_dir}'\n\
unix_socket_permissions = 0700\n\
max_connections = 100\n\
shared_buffers = 128MB\n"
    )
}

/// `C.UTF-8` when the system has it (glibc 2.35+ always does), else `C`.
fn initdb_locale() -> &'static str {
    let has_c_utf8 = Command::new("locale")
        .arg("-a")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| matches!(l.trim().to_ascii_lowercase().as_str(), "c.utf8" | "c.utf-8"))
        });
    if has_c_utf8 {
        "C.UTF-8"
    } else {
        "C"
    }
}

/// Starts the server with pg_ctl so that it outlives us (later runs reuse it).
fn start_server(layout: &Layout, user: &ServerUser, bin: &Path, ui: &Ui) -> Result<()> {
    let socket_dir = &layout.socket_dir;
    DirBuilder::new()
        .mode(0o700)
        .create(socket_dir)
        .or_else(|e| if socket_dir.is_dir() { Ok(()) } else { Err(e) })
        .with_context(|| {
            format!(
                "cannot create the socket directory {}",
                socket_dir.display()
            )
        })?;
    user.own(socket_dir)?;
    fs::set_permissions(socket_dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", socket_dir.display()))?;

    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&layout.log_file)
        .with_context(|| format!("cannot open the log file {}", layout.log_file.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    drop(log);
    user.own(&layout.log_file)?;

    remove_foreign_pid_file(layout, ui)?;

    let step = ui.step("Starting the embedded PostgreSQL");
    let mut pg_ctl = user.command(bin.join("pg_ctl"));
    pg_ctl
        .args(["start", "-w", "-t", "60", "-s", "-D"])
        .arg(&layout.cluster_dir)
        .arg("-l")
        .arg(&layout.log_file);
    let result = pg_ctl.output();
    let probe = probe(layout);
    match result {
        Ok(out) if out.status.success() && probe.running => {
            let pid = probe.pid.map(|p| format!("pid {p}, ")).unwrap_or_default();
            let took = ui::duration(step.elapsed());
            step.done(format!("ready ({pid}{took})"));
            Ok(())
        }
        other => {
            step.fail();
            let detail = match other {
                Ok(out) if out.status.success() => {
                    "pg_ctl reported success, but nothing answers on the socket".to_owned()
                }
                Ok(out) => format!(
                    "pg_ctl start {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => format!("cannot run pg_ctl: {e}"),
            };
            Err(EmbeddedError::StartFailed {
                detail,
                log: layout.log_file.clone(),
                tail: log_tail(&layout.log_file, log_start, 20),
            }
            .into())
        }
    }
}

/// After a reboot, `postmaster.pid` may name a pid now used by another
/// process, and postgres would then refuse to start. Remove the file only
/// when that process is provably not a server of this cluster.
fn remove_foreign_pid_file(layout: &Layout, ui: &Ui) -> Result<()> {
    let Ok(text) = fs::read_to_string(layout.pid_file()) else {
        return Ok(());
    };
    let Some(pid) = PidFile::parse(&text).pid else {
        return Ok(());
    };
    if !process_exists(pid) {
        return Ok(()); // postgres itself handles a dead pid
    }
    let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
        return Ok(()); // cannot tell: leave it to postgres
    };
    let ours = fs::canonicalize(&layout.cluster_dir).unwrap_or_else(|_| layout.cluster_dir.clone());
    if cwd != ours {
        ui.warn(format!(
            "{} names pid {pid}, which is not this cluster's server (stale after a crash or reboot); removing it",
            layout.pid_file().display()
        ));
        fs::remove_file(layout.pid_file())
            .with_context(|| format!("cannot remove {}", layout.pid_file().display()))?;
    }
    Ok(())
}

/// The last `n` lines the log gained since byte `from`.
fn log_tail(path: &Path, from: u64, n: usize) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.read_to_string(&mut text)
    });
    if let Err(e) = read {
        return format!("  (cannot read it: {e})");
    }
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "  (empty)".to_owned();
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The locked part of [`stop`].
fn stop_locked(cfg: &EmbeddedConfig, ui: &Ui) -> Result<()> {
    let layout = Layout::new(&cfg.data_dir)?;
    if cluster_version(&layout.cluster_dir).is_none() {
        ui.info("The embedded PostgreSQL cluster does not exist; nothing to stop.");
        return Ok(());
    }
    let _lock = lock_data_dir(&layout)?;
    if !probe(&layout).alive {
        ui.info("The embedded PostgreSQL is not running.");
        return Ok(());
    }
    let user = ServerUser::resolve(cfg)?;
    let (bin, _) = pg_bin_for(cfg, &layout)?;
    let step = ui.step("Stopping the embedded PostgreSQL");
    let mut pg_ctl = user.command(bin.join("pg_ctl"));
    pg_ctl
        .args(["stop", "-m", "fast", "-w", "-t", "60", "-s", "-D"])
        .arg(&layout.cluster_dir);
    match run(pg_ctl, "pg_ctl stop") {
        Ok(_) => {
            let took = ui::duration(step.elapsed());
            step.done(format!("stopped ({took})"));
            Ok(())
        }
        // It went away between our check and pg_ctl's: stopped is stopped.
        Err(_) if !probe(&layout).alive => {
            step.done("stopped");
            Ok(())
        }
        Err(e) => {
            step.fail();
            Err(e.context("cannot stop the embedded PostgreSQL"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_version_from_postgres_version_output() {
        assert_eq!(
            major_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(),
            Some("15")
        );
        assert_eq!(
            major_version("postgres (PostgreSQL) 17.2").as_deref(),
            Some("17")
        );
        assert_eq!(
            major_version("postgres (PostgreSQL) 9.6.24").as_deref(),
            Some("9.6")
        );
        assert_eq!(major_version("garbage"), None);
    }

    #[test]
    fn pid_file_pid_and_status() {
        let text = "4242\n/var/lib/stategraph/pg\n1700000000\n5432\n/var/lib/stategraph/run\n\n  1234     5678\nready   \n";
        assert_eq!(
            PidFile::parse(text),
            PidFile {
                pid: Some(4242),
                status: Some("ready".into())
            }
        );
        // Written in pieces while the server starts: no status yet.
        assert_eq!(
            PidFile::parse("4242\n/x\n"),
            PidFile {
                pid: Some(4242),
                status: None
            }
        );
        assert_eq!(
            PidFile::parse(""),
            PidFile {
                pid: None,
                status: None
            }
        );
    }

    #[test]
    fn settings_never_listen_on_tcp_and_quote_the_socket_dir() {
        let s = server_settings(Path::new("/data/it's/run"));
        assert!(s.contains("listen_addresses = ''\n"), "{s}");
        assert!(
            s.contains("unix_socket_directories = '/data/it''s/run'\n"),
            "{s}"
        );
        assert!(s.contains("unix_socket_permissions = 0700\n"), "{s}");
        assert!(
            !s.contains("fsync"),
            "the embedded cluster keeps fsync on: {s}"
        );
    }

    #[test]
    fn newest_installation_wins_and_incomplete_ones_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let make = |version: &str, names: &[&str]| {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for name in names {
                let p = bin.join(name);
                fs::write(&p, "#!/bin/sh\n").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        };
        make("9.6", &["initdb", "pg_ctl", "postgres"]);
        make("14", &["initdb", "pg_ctl", "postgres"]);
        make("16", &["initdb", "pg_ctl"]); // client-only leftovers
        make("notaversion", &["initdb", "pg_ctl", "postgres"]);
        assert_eq!(
            newest_installed(&[root.path()]),
            Some(root.path().join("14/bin"))
        );
    }

    #[test]
    fn explicit_bin_dir_lacking_a_binary_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = find_pg_bin(Some(dir.path()), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("STATEGRAPH_PG_BIN") && text.contains("`initdb`"),
            "{text}"
        );
    }

    #[test]
    fn missing_binaries_error_says_how_to_get_them() {
        let text = EmbeddedError::NoServerBinaries.to_string();
        for needle in [
            "./install.sh",
            "apt-get install postgresql",
            "STATEGRAPH_PG_BIN",
            "--database-url",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[test]
    fn too_long_a_socket_path_is_refused_up_front() {
        let long = PathBuf::from("/").join("d".repeat(120));
        let e = Layout::new(&long).unwrap_err();
        assert!(e.to_string().contains("shorter STATEGRAPH_DATA_DIR"), "{e}");
    }

    #[test]
    fn traversal_follows_owner_group_other_bits() {
        let dir = tempfile::tempdir().unwrap();
        let meta = |mode: u32| {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            fs::metadata(dir.path()).unwrap()
        };
        let me = nix::unistd::geteuid();
        let other = ServerUser {
            name: "other".into(),
            uid: Uid::from_raw(me.as_raw().wrapping_add(4242)),
            gid: Gid::from_raw(4242_4242),
            home: "/".into(),
            switch: true,
        };
        assert!(!other.can_traverse(&meta(0o700)));
        assert!(other.can_traverse(&meta(0o711)));
        let owner = ServerUser {
            uid: me,
            ..other.clone()
        };
        assert!(owner.can_traverse(&meta(0o700)));
        assert!(!owner.can_traverse(&meta(0o077)));
    }

    #[test]
    fn status_of_a_fresh_data_dir_says_it_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedConfig {
            data_dir: dir.path().join("sg"),
            pg_bin: None,
            run_as: None,
            search_path: None,
            refuse_create: false,
        };
        let s = status(&cfg).unwrap();
        assert!(!s.exists && !s.running && s.pid.is_none() && s.version.is_none());
        assert_eq!(s.socket_dir, dir.path().join("sg/run"));
        assert!(
            !dir.path().join("sg").exists(),
            "status must not create anything"
        );
    }
}
