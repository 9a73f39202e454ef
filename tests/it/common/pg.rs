//! An ephemeral PostgreSQL cluster for integration tests, one per test
//! process, and a fresh empty database per test.
//!
//! Owns: the cluster's temp directory, its server process and their cleanup.
//! The cluster trades durability for speed (fsync off) and listens on
//! 127.0.0.1 on a port the OS picked and on a unix socket in its temp
//! directory, with trust auth. Statics are never
//! dropped, so cleanup does not rely on destructors: a supervisor shell
//! (in its own process group, so a Ctrl-C to the test does not kill it
//! first) starts the server and waits on a pipe whose write end only this
//! process holds. When the process ends in any way (normal exit, panic,
//! kill -9), the kernel closes the pipe, and the supervisor stops the
//! server and removes the directory. Missing server binaries fail the test
//! with a message saying how to install them; nothing is skipped.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The unprivileged user the cluster runs as when the tests run as root.
const SERVER_USER: &str = "postgres";
/// The cluster's superuser role.
const SUPERUSER: &str = "postgres";
/// The directory of a cluster's unix socket, in its temp directory (the
/// server listens on 127.0.0.1 and on this socket).
const SOCKET_DIR: &str = "sock";
/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh, empty database in the per-process cluster (or, built by hand,
/// any database a test's commands should use).
#[derive(Clone)]
pub struct TestDb {
    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub url: String,
    /// The database's name.
    pub name: String,
}

/// Creates a database with a unique name, starting the cluster on first call.
pub fn test_db() -> TestDb {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = TestDb {
        url: cluster_url("postgres"),
        name: "postgres".to_owned(),
    };
    admin.psql(&format!("CREATE DATABASE {name}"));
    TestDb {
        url: cluster_url(&name),
        name,
    }
}

/// The URL of database `dbname` in the per-process cluster (started if needed).
pub fn cluster_url(dbname: &str) -> String {
    format!(
        "postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}",
        cluster().port
    )
}

/// The per-process cluster's port on 127.0.0.1 (started if needed).
pub fn cluster_port() -> u16 {
    cluster().port
}

/// The directory of the per-process cluster's unix socket
/// (`.s.PGSQL.PORT`): what `PGHOST` or `host=` name to connect through it.
pub fn cluster_socket_dir() -> PathBuf {
    cluster().dir.join(SOCKET_DIR)
}

/// The per-process cluster's temp directory (removed when the process ends).
pub fn cluster_dir() -> &'static Path {
    &cluster().dir
}

impl TestDb {
    /// Runs `sql` with psql and returns its trimmed stdout; panics with stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        let psql = psql_bin();
        let out = clean_psql(&psql)
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1"])
            .arg(&self.url)
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", psql.display()));
        if !out.status.success() {
            panic!(
                "psql failed on database {} ({}):\n{sql}\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

struct Cluster {
    port: u16,
    /// The temp directory holding the cluster and its log.
    dir: PathBuf,
    /// The supervisor; its stdin is the pipe whose closing stops everything.
    _supervisor: Mutex<Child>,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster)
}

fn start_cluster() -> Cluster {
    let (port, dir, supervisor) = start_new_cluster();
    Cluster {
        port,
        dir,
        _supervisor: Mutex::new(supervisor),
    }
}

/// The PostgreSQL server binaries: `$STATEGRAPH_PG_BIN`, else where
/// stategraph itself looks. Panics saying how to install them.
fn pg_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let explicit = std::env::var_os("STATEGRAPH_PG_BIN").map(PathBuf::from);
        stategraph::db::embedded::find_pg_bin(explicit.as_deref(), std::env::var("PATH").ok().as_deref()).unwrap_or_else(|e| {
            panic!("the tests need a PostgreSQL server to run against.\n{e:#}\n(./install.sh installs it; STATEGRAPH_PG_BIN names its bin directory.)")
        })
    })
}

/// psql beside the server binaries, else the one on PATH.
fn psql_bin() -> PathBuf {
    match pg_bin().join("psql") {
        p if p.is_file() => p,
        _ => PathBuf::from("psql"),
    }
}

/// initdb and start a cluster (see [`try_start`]): its port, temp directory
/// and supervisor. A port the OS gave us may be taken again before postgres
/// binds it (another test process did the same): then start over on a new
/// port, three times at most.
fn start_new_cluster() -> (u16, PathBuf, Child) {
    let mut last_error = String::new();
    for _ in 0..3 {
        let started = Instant::now();
        match try_start(pg_bin()) {
            Ok((port, dir, supervisor)) => {
                eprintln!(
                    "test PostgreSQL ready on 127.0.0.1:{port} in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                return (port, dir, supervisor);
            }
            Err(StartError::PortTaken(log)) => last_error = log,
            Err(StartError::Failed(msg)) => panic!("{msg}"),
        }
    }
    panic!("a test PostgreSQL could not bind a free port three times; last log:\n{last_error}");
}

enum StartError {
    PortTaken(String),
    Failed(String),
}

/// The server user's uid and gid when we are root (PostgreSQL refuses root).
fn server_ids() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name(SERVER_USER)
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!("tests run as root, and PostgreSQL refuses root: they need the `{SERVER_USER}` user (./install.sh creates it with the postgresql package)")
        });
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn try_start(bin: &Path) -> Result<(u16, PathBuf, Child), StartError> {
    let ids = server_ids();
    let root = tempfile::Builder::new()
        .prefix("stategraph-test-pg-")
        .tempdir()
        .map_err(|e| StartError::Failed(format!("cannot create a temp dir: {e}")))?
        .keep(); // the supervisor removes it
    let fail = |msg: String| {
        let _ = std::fs::remove_dir_all(&root);
        StartError::Failed(msg)
    };
    let data = root.join("data");
    let socket_dir = root.join(SOCKET_DIR);
    let log = root.join("postgresql.log");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(&socket_dir))
        .map_err(|e| fail(format!("cannot create {}: {e}", data.display())))?;
    if let Some((uid, gid)) = ids {
        // The server user must traverse our temp dir and own its data dir
        // and socket dir.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
            .and_then(|()| std::os::unix::fs::chown(&data, Some(uid), Some(gid)))
            .and_then(|()| std::os::unix::fs::chown(&socket_dir, Some(uid), Some(gid)))
            .map_err(|e| {
                fail(format!(
                    "cannot hand {} to {SERVER_USER}: {e}",
                    data.display()
                ))
            })?;
    }

    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir("/")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = ids {
        initdb.uid(uid).gid(gid).env("HOME", &root);
    }
    let out = initdb
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", bin.join("initdb").display())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "initdb of the test cluster failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| fail(format!("cannot get a free port: {e}")))?
        .port();

    // sh -c SCRIPT sh LOG DIR [setpriv ...] postgres ARGS...
    const SUPERVISOR: &str = r#"
log="$1"; dir="$2"; shift 2
"$@" >"$log" 2>&1 </dev/null &
pid=$!
echo "$pid"
read _ignored || true
kill -QUIT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(SUPERVISOR).arg("sh").arg(&log).arg(&root);
    if let Some((uid, gid)) = ids {
        // setpriv execs, so $! is the postmaster itself.
        cmd.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
        ]);
    }
    cmd.arg(bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", socket_dir.display()))
        .args(["-c", "max_connections=200"])
        .args([
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "synchronous_commit=off",
        ])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut supervisor = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start the test PostgreSQL supervisor: {e}")))?;
    let mut line = String::new();
    let stdout = supervisor.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| StartError::Failed(format!("cannot read the postgres pid: {e}")))?;
    let pid: u32 = line
        .trim()
        .parse()
        .map_err(|_| StartError::Failed(format!("the supervisor printed no pid: {line:?}")))?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if accepts_connections(bin, port) {
            return Ok((port, root, supervisor));
        }
        let died = !process_alive(pid);
        if died || Instant::now() > deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Closing stdin lets the supervisor clean up and exit.
            drop(supervisor.stdin.take());
            let _ = supervisor.wait();
            if died && (text.contains("could not bind") || text.contains("Address already in use"))
            {
                return Err(StartError::PortTaken(text));
            }
            let why = if died {
                "exited"
            } else {
                "did not accept connections within 30 s"
            };
            return Err(StartError::Failed(format!(
                "the test PostgreSQL on 127.0.0.1:{port} {why}. Its log:\n{text}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the server completes a connection (not just a TCP accept while starting).
fn accepts_connections(bin: &Path, port: u16) -> bool {
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        return false;
    }
    let port = port.to_string();
    let target = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        SUPERUSER,
        "-d",
        "postgres",
    ];
    let isready = bin.join("pg_isready");
    let probe = if isready.is_file() {
        Command::new(isready)
            .arg("-q")
            .args(target)
            .stdin(Stdio::null())
            .status()
    } else {
        Command::new("psql")
            .arg("-XAtq")
            .args(target)
            .args(["-c", "select 1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    probe.is_ok_and(|s| s.success())
}

/// Alive and not a zombie (the supervisor reaps it only once we close the pipe).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// A separate ephemeral cluster with its own configuration (e.g. TLS),
/// started by [`start_cluster_with`]. The server stops and its directory is
/// removed when the handle is dropped (that closes the supervisor's pipe) or,
/// like the shared cluster, when the test process ends in any way.
pub struct ClusterHandle {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The temp directory holding the cluster (removed by the supervisor);
    /// a place for test files that must go away with the cluster.
    pub dir: PathBuf,
    /// The data directory (owned by the server user).
    pub data_dir: PathBuf,
    log: PathBuf,
    /// Its stdin is the pipe whose closing stops everything.
    _supervisor: Child,
}

impl ClusterHandle {
    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `sql` with psql against `url` (a full libpq URL or conninfo),
    /// with no libpq variables from the environment; returns the raw output.
    pub fn psql_output(&self, url: &str, sql: &str) -> std::process::Output {
        let psql = psql_bin();
        clean_psql(&psql)
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1"])
            .arg(url)
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", psql.display()))
    }

    /// Like [`ClusterHandle::psql_output`], returning trimmed stdout; panics
    /// with stderr and the server log on failure.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = self.psql_output(url, sql);
        if !out.status.success() {
            panic!(
                "psql failed on {} ({}):\n{sql}\n{}\nserver log:\n{}",
                redact_url(url),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The libpq variables that could redirect or alter a connection (host,
/// credentials, TLS, options): removed from every client a test starts, so
/// that only what the test says counts.
pub const LIBPQ_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGOPTIONS",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGAPPNAME",
];

/// psql with [`LIBPQ_VARS`] removed and no stdin.
fn clean_psql(psql: &Path) -> Command {
    let mut cmd = Command::new(psql);
    for var in LIBPQ_VARS {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// `url` with any password replaced, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if s + 3 < at => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Starts a separate ephemeral cluster, like the shared one (same binaries,
/// same server user, trust auth, 127.0.0.1 on a free port, same cleanup),
/// then writes `files` (name relative to the data directory, e.g.
/// `server.key` or `pg_hba.conf`, which replaces the default) with mode
/// 0600 owned by the server user, appends `extra_conf` to
/// `postgresql.conf`, and reloads the configuration, waiting until new
/// connections see it. Settings that need a restart are refused (panic),
/// as are configuration or pg_hba errors; `ssl` and its files, pg_hba and
/// logging settings all take effect on reload.
pub fn start_cluster_with(extra_conf: &str, files: &[(&str, &[u8])]) -> ClusterHandle {
    let (port, dir, supervisor) = start_new_cluster();
    let handle = ClusterHandle {
        port,
        data_dir: dir.join("data"),
        log: dir.join("postgresql.log"),
        dir,
        _supervisor: supervisor,
    };

    let ids = server_ids();
    for (name, bytes) in files {
        let rel = Path::new(name);
        assert!(
            rel.is_relative()
                && rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
            "start_cluster_with: file name {name:?} must be relative to the data directory"
        );
        let path = handle.data_dir.join(rel);
        let _ = std::fs::remove_file(&path);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("cannot hand {} to {SERVER_USER}: {e}", path.display()));
        }
    }
    // Errors on lines before ours are initdb's and harmless (its
    // max_connections, overridden on the command line, "cannot be applied").
    let conf = handle.data_dir.join("postgresql.conf");
    let initdb_lines = std::fs::read_to_string(&conf)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", conf.display()))
        .lines()
        .count();
    if !extra_conf.trim().is_empty() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    format!("\n# start_cluster_with\n{extra_conf}\n").as_bytes(),
                )
            })
            .unwrap_or_else(|e| panic!("cannot append to {}: {e}", conf.display()));
    }

    // Before the reload the server takes plain connections; afterwards it
    // may demand TLS: libpq's default sslmode (prefer) works either way.
    let admin = format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres?sslmode=prefer");
    let before = handle.psql(&admin, "SELECT pg_conf_load_time()");
    handle.psql(&admin, "SELECT pg_reload_conf()");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let out = handle.psql_output(&admin, "SELECT pg_conf_load_time()");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != before {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the test PostgreSQL on 127.0.0.1:{port} did not reload its configuration within 30 s \
(last psql: {}). Its log:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                handle.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let errors = handle.psql(
        &admin,
        &format!("SELECT coalesce(string_agg(format('%s:%s %s: %s', sourcefile, sourceline, name, error), E'\\n'), '') \
         FROM pg_file_settings WHERE error IS NOT NULL \
         AND NOT (sourcefile = {} AND sourceline <= {initdb_lines})",
        sql_literal(&conf.to_string_lossy()),
    ));
    let hba_errors = handle.psql(
        &admin,
        "SELECT coalesce(string_agg(format('pg_hba.conf:%s: %s', line_number, error), E'\\n'), '') \
         FROM pg_hba_file_rules WHERE error IS NOT NULL",
    );
    if !errors.is_empty() || !hba_errors.is_empty() {
        panic!(
            "the test PostgreSQL on 127.0.0.1:{port} did not take its configuration:\n{errors}\n{hba_errors}\nIts log:\n{}",
            handle.log()
        );
    }
    handle
}

/// `s` as an SQL string literal.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
