//! Connecting to PostgreSQL: connection targets (URL or libpq variables),
//! TLS per libpq's `sslmode`, and the deadpool pool.
//!
//! The password never leaves this module: [`PgTarget::display`] and every
//! error name the host and database only.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::mpsc;
use tokio_postgres::config::{Host, SslMode, TargetSessionAttrs};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, the part of it we honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, certificate not checked (libpq's
    /// default) unless `sslrootcert` is given: then as `VerifyCa`.
    Prefer,
    /// TLS always, certificate not checked unless `sslrootcert` is given:
    /// then as `VerifyCa` (libpq's rule).
    Require,
    /// TLS, certificate chain checked against `sslrootcert`, host name not checked.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

/// A PostgreSQL server to connect to.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Connection parameters (may hold the password: never print this).
    pub config: tokio_postgres::Config,
    /// TLS requirement.
    pub tls: TlsMode,
    /// `sslrootcert`: PEM file of trusted roots for verify-ca / verify-full.
    pub root_cert: Option<PathBuf>,
    /// `host:port/dbname`, safe to print.
    pub display: String,
    /// The libpq variables this target was built from (see [`LIBPQ_ENV`]):
    /// stategraph's business, kept from terraform and its providers.
    pub env_used: Vec<String>,
}

/// The libpq variables stategraph reads when it connects to a server: each
/// one that is set fills what the URL leaves out, as in libpq.
pub const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGAPPNAME",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
];

/// `base` (a URL without its query) with `PGPORT` written in when its hosts
/// name no port: tokio-postgres reads a host without a port as port 5432,
/// where libpq takes `PGPORT` (one port for every host, or one per host).
/// Also whether `PGPORT` was used.
fn with_env_ports(base: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<(String, bool)> {
    let unchanged = Ok((base.to_owned(), false));
    let Some((scheme, rest)) = base.split_once("://") else {
        return unchanged;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let has_port = |h: &str| match h.rsplit_once(']') {
        Some((_, after)) => after.starts_with(':'),
        None => h.contains(':'),
    };
    if hosts.is_empty() || hosts.split(',').any(has_port) {
        return unchanged;
    }
    let Some(ports) = get("PGPORT") else {
        return unchanged;
    };
    let ports: Vec<&str> = ports.split(',').map(str::trim).collect();
    let hosts: Vec<&str> = hosts.split(',').collect();
    if ports.len() != 1 && ports.len() != hosts.len() {
        bail!(
            "PGPORT lists {} ports for the {} hosts of the database URL: give one, or one per host",
            ports.len(),
            hosts.len()
        );
    }
    let hosts: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{h}:{}", ports[if ports.len() == 1 { 0 } else { i }]))
        .collect();
    Ok((
        format!("{scheme}://{userinfo}{}{path}", hosts.join(",")),
        true,
    ))
}

/// libpq's default server when nothing names one: the local unix socket in
/// the usual directories (Debian's, then PostgreSQL's own default), else
/// `localhost`.
fn default_host(port: u16) -> String {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|dir| {
            std::path::Path::new(dir)
                .join(format!(".s.PGSQL.{port}"))
                .exists()
        })
        .unwrap_or("localhost")
        .to_owned()
}

impl PgTarget {
    /// Parses a `postgres://` URL (or a libpq `key=value` string), taking
    /// `sslmode` and `sslrootcert` ourselves since tokio-postgres knows only
    /// part of them. Nothing comes from the environment (see
    /// [`PgTarget::from_url_with_env`]).
    pub fn from_url(url: &str) -> Result<PgTarget> {
        PgTarget::from_url_with_env(url, &|_| None)
    }

    /// Like [`PgTarget::from_url`], with what the URL leaves out taken from
    /// the libpq variables, as libpq does (`postgres:///tf` with `PGHOST`,
    /// `PGUSER` and `PGPASSWORD` set connects where psql would).
    pub fn from_url_with_env(url: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<PgTarget> {
        let mut tls = None;
        let mut root_cert = None;
        let mut used = Vec::new();
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let (base, pgport) = with_env_ports(base, get)?;
            let base = base.as_str();
            used.extend(pgport.then(|| "PGPORT".to_owned()));
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v);
                match k {
                    "sslmode" => tls = Some(TlsMode::parse(&v)?),
                    "sslrootcert" => root_cert = Some(PathBuf::from(v)),
                    _ => kept.push(pair),
                }
            }
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        } else {
            let mut kept = Vec::new();
            for word in url.split_whitespace() {
                match word.split_once('=') {
                    Some(("sslmode", v)) => tls = Some(TlsMode::parse(v)?),
                    Some(("sslrootcert", v)) => root_cert = Some(PathBuf::from(v)),
                    _ => kept.push(word),
                }
            }
            kept.join(" ")
        };
        let config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            anyhow!(
                "the database URL is not valid: {e}\n\nExpected postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=require], \
host=/socket/dir for a unix socket, HOST1,HOST2 for several servers"
            )
        })?;
        PgTarget::with_env_defaults(config, tls, root_cert, get, used)
    }

    /// Builds a target from the libpq variables alone (see [`LIBPQ_ENV`]).
    pub fn from_libpq_env(get: &dyn Fn(&str) -> Option<String>) -> Result<PgTarget> {
        PgTarget::with_env_defaults(tokio_postgres::Config::new(), None, None, get, Vec::new())
    }

    /// Fills what `config` leaves out from the libpq variables, then libpq's
    /// defaults, and records which variables were used (after `used`).
    fn with_env_defaults(
        mut config: tokio_postgres::Config,
        tls: Option<TlsMode>,
        root_cert: Option<PathBuf>,
        get: &dyn Fn(&str) -> Option<String>,
        used: Vec<String>,
    ) -> Result<PgTarget> {
        let used = std::cell::RefCell::new(used);
        let env = |k: &str| {
            debug_assert!(LIBPQ_ENV.contains(&k), "{k} is not in LIBPQ_ENV");
            let v = get(k);
            if v.is_some() {
                used.borrow_mut().push(k.to_owned());
            }
            v
        };
        if config.get_ports().is_empty() {
            if let Some(ports) = env("PGPORT") {
                for port in ports.split(',') {
                    let port: u16 = port.trim().parse().map_err(|_| {
                        anyhow!("PGPORT={ports} is not a port number (or a comma-separated list of them)")
                    })?;
                    config.port(port);
                }
            }
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            let hostaddrs = env("PGHOSTADDR");
            match env("PGHOST") {
                // `host` takes a path starting with `/` as a socket directory.
                Some(hosts) => {
                    for h in hosts.split(',') {
                        config.host(h.trim());
                    }
                }
                None if hostaddrs.is_none() => {
                    let port = config.get_ports().first().copied().unwrap_or(5432);
                    config.host(default_host(port));
                }
                None => {}
            }
            for addr in hostaddrs.iter().flat_map(|a| a.split(',')) {
                let ip = addr
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("PGHOSTADDR={addr} is not an IP address"))?;
                config.hostaddr(ip);
            }
        }
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| get("USER"))
                .unwrap_or_else(|| "postgres".to_owned());
            config.user(&user);
        }
        if config.get_password().is_none() {
            if let Some(pw) = env("PGPASSWORD") {
                config.password(pw);
            }
        }
        if config.get_dbname().is_none() {
            let db = env("PGDATABASE")
                .or_else(|| config.get_user().map(str::to_owned))
                .unwrap_or_else(|| "postgres".to_owned());
            config.dbname(&db);
        }
        if config.get_password().is_none() {
            let file = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
            if let Some(pw) = file.and_then(|f| password_from_file(&f, &config)) {
                config.password(pw);
            }
        }
        if config.get_connect_timeout().is_none() {
            if let Some(t) = env("PGCONNECT_TIMEOUT") {
                let secs: u64 = t
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("PGCONNECT_TIMEOUT={t} is not a number of seconds"))?;
                if secs > 0 {
                    config.connect_timeout(Duration::from_secs(secs));
                }
            }
        }
        if config.get_target_session_attrs() == TargetSessionAttrs::Any {
            if let Some(attrs) = env("PGTARGETSESSIONATTRS") {
                config.target_session_attrs(match attrs.as_str() {
                    "any" => TargetSessionAttrs::Any,
                    "read-write" => TargetSessionAttrs::ReadWrite,
                    "read-only" => TargetSessionAttrs::ReadOnly,
                    other => bail!(
                        "PGTARGETSESSIONATTRS={other} is not supported: use any, read-write or read-only"
                    ),
                });
            }
        }
        if config.get_application_name().is_none() {
            if let Some(name) = env("PGAPPNAME") {
                config.application_name(&name);
            }
        }
        if config.get_options().is_none() {
            if let Some(options) = env("PGOPTIONS") {
                config.options(&options);
            }
        }
        let tls = match tls {
            Some(tls) => tls,
            None => match env("PGSSLMODE") {
                Some(m) => TlsMode::parse(&m)?,
                None => TlsMode::Prefer,
            },
        };
        let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT").map(PathBuf::from));
        let mut target = PgTarget::new(config, tls, root_cert);
        target.env_used = used.into_inner();
        Ok(target)
    }

    /// A target from a finished config (used by the embedded cluster).
    pub fn new(
        mut config: tokio_postgres::Config,
        tls: TlsMode,
        root_cert: Option<PathBuf>,
    ) -> PgTarget {
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("stategraph");
        }
        // libpq never asks for TLS on a unix socket (the server would refuse).
        let unix_only = !config.get_hosts().is_empty()
            && config.get_hostaddrs().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, Host::Unix(_)));
        if unix_only {
            config.ssl_mode(SslMode::Disable);
        }
        let display = describe(&config);
        PgTarget {
            config,
            tls,
            root_cert,
            display,
            env_used: Vec::new(),
        }
    }

    /// Opens a pool of at most `size` connections and checks that one
    /// connects, within `connect_timeout` per host as libpq counts it (the
    /// whole startup, not only the TCP handshake).
    pub async fn connect(&self, size: usize) -> Result<Pool> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if self.config.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager_config)
        } else {
            let tls = SocketAwareTls(MakeRustlsConnect::new(self.rustls_config()?));
            Manager::from_config(self.config.clone(), tls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(size)
            .build()
            .context("cannot build the connection pool")?;
        let per_host = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let hosts = self
            .config
            .get_hosts()
            .len()
            .max(self.config.get_hostaddrs().len())
            .max(1) as u32;
        let problem = match tokio::time::timeout(per_host * hosts, pool.get()).await {
            Ok(Ok(_)) => return Ok(pool),
            Ok(Err(e)) => connect_problem(&e, per_host),
            Err(_) => timeout_problem(per_host),
        };
        Err(anyhow!(
            "cannot connect to PostgreSQL at {}: {problem}",
            self.display
        ))
    }

    /// A connection of its own that `LISTEN`s on `channel` (the pool's
    /// connections cannot: their driver drops notifications).
    pub async fn listen(&self, channel: &str) -> Result<Notifications> {
        if self.config.get_ssl_mode() == SslMode::Disable {
            listen_with(&self.config, tokio_postgres::NoTls, channel).await
        } else {
            let tls = SocketAwareTls(MakeRustlsConnect::new(self.rustls_config()?));
            listen_with(&self.config, tls, channel).await
        }
    }

    fn rustls_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?;
        // libpq: with a root certificate given, require (and prefer) check
        // the chain as verify-ca does.
        let mode = match (self.tls, &self.root_cert) {
            (TlsMode::Prefer | TlsMode::Require, Some(_)) => TlsMode::VerifyCa,
            (mode, _) => mode,
        };
        let config = match mode {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let mut roots = RootCertStore::empty();
                match &self.root_cert {
                    Some(path) => {
                        let certs = CertificateDer::pem_file_iter(path)
                            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| {
                                anyhow!("cannot read sslrootcert {}: {e}", path.display())
                            })?;
                        if certs.is_empty() {
                            bail!("sslrootcert {} holds no PEM certificate", path.display());
                        }
                        for cert in certs {
                            roots
                                .add(cert)
                                .map_err(|e| anyhow!("sslrootcert {}: {e}", path.display()))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .context("TLS verifier")?;
                if mode == TlsMode::VerifyFull {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(IgnoreHostName(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(config)
    }
}

/// The password for `config`'s first host that has one in the libpq
/// password file `file` (`host:port:dbname:user:password` lines, `*` for
/// any, `\\` escaping `:` and `\\`); `localhost` stands for a unix socket.
/// A file others may read is ignored, as libpq ignores it.
fn password_from_file(file: &std::path::Path, config: &tokio_postgres::Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let entries: Vec<Vec<String>> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(pgpass_fields)
        .filter(|f| f.len() == 5)
        .collect();
    let db = config.get_dbname().unwrap_or_default();
    let user = config.get_user().unwrap_or_default();
    let ports = config.get_ports();
    config.get_hosts().iter().enumerate().find_map(|(i, host)| {
        let host = match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(_) => "localhost".to_owned(),
        };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let wanted = [host, port.to_string(), db.to_owned(), user.to_owned()];
        entries
            .iter()
            .find(|e| {
                e.iter()
                    .zip(&wanted)
                    .all(|(field, want)| field == "*" || field == want)
            })
            .map(|e| e[4].clone())
    })
}

/// One line of a password file split at its unescaped colons.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// `host:port/dbname` with no user or password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{hosts}/{db}")
}

/// What went wrong connecting, and what to do: a timeout names the setting
/// that controls it, an answer that is not PostgreSQL's says so.
/// The notifications of one `LISTEN`ing connection, closed when dropped.
pub struct Notifications {
    rx: mpsc::UnboundedReceiver<String>,
    _client: tokio_postgres::Client,
}

impl Notifications {
    /// The next notification's payload; `None` once the connection closed.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

/// [`PgTarget::listen`] with the TLS connector `tls`.
async fn listen_with<T>(
    config: &tokio_postgres::Config,
    tls: T,
    channel: &str,
) -> Result<Notifications>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let per_host = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let (client, mut connection) = tokio::time::timeout(per_host, config.connect(tls))
        .await
        .map_err(|_| anyhow!("timed out connecting to listen for notifications"))??;
    let (tx, rx) = mpsc::unbounded_channel();
    // Drives the connection until the client is dropped (or it fails).
    tokio::spawn(async move {
        while let Some(message) =
            futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await
        {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.payload().to_owned());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok(Notifications {
        rx,
        _client: client,
    })
}

fn connect_problem(e: &deadpool_postgres::PoolError, per_host: Duration) -> String {
    use std::error::Error;
    let mut innermost = e.to_string();
    let mut timed_out = false;
    let mut not_postgres = false;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            // The stream ended amid what is no PostgreSQL message.
            not_postgres |= io.to_string() == "bytes remaining on stream";
        }
        if let Some(pg) = s.downcast_ref::<tokio_postgres::Error>() {
            let text = pg.to_string();
            not_postgres |=
                text.contains("error parsing response") || text.contains("unexpected message");
        }
        innermost = s.to_string();
        source = s.source();
    }
    if timed_out {
        timeout_problem(per_host)
    } else if not_postgres {
        format!(
            "what answered is not a PostgreSQL server ({innermost})\n\n\
Check the host and port: something else listens there (an HTTP proxy, another service)."
        )
    } else if innermost.contains("does not allow writes") || innermost.contains("allows writes") {
        // tokio-postgres's words when no host has the target_session_attrs asked for.
        format!(
            "no server answered with the target_session_attrs asked for ({innermost})\n\n\
With target_session_attrs=read-write, the primary may be down or failing over: try again once \
one server accepts writes. Commands that only read (state pull/list/show, output, show, log, \
history, query, cone) can read from a standby with STATEGRAPH_READ_TARGET_SESSION_ATTRS=any."
        )
    } else {
        format!(
            "{innermost}\n\n\
Check that the server is running and reachable, and the URL, user and password \
(--database-url / STATEGRAPH_DATABASE_URL, or the PG* variables). Without any of them stategraph \
uses its embedded database."
        )
    }
}

fn timeout_problem(per_host: Duration) -> String {
    format!(
        "no answer within {} s (connect_timeout)\n\n\
Check that the host is reachable from here (a firewall, a VPN, a private address?). \
connect_timeout=SECONDS in the URL, or PGCONNECT_TIMEOUT, sets how long to wait for each host \
(default 10).",
        per_host.as_secs()
    )
}

/// rustls with one addition: tokio-postgres asks for the server name of a
/// unix socket too (an empty one, which rustls refuses) though no TLS ever
/// runs there (the server answers the TLS request with a no).
#[derive(Clone)]
struct SocketAwareTls(MakeRustlsConnect);

impl tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> for SocketAwareTls {
    type Stream =
        <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        tokio_postgres::Socket,
    >>::TlsConnect;
    type Error =
        <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let domain = if domain.is_empty() {
            "localhost"
        } else {
            domain
        };
        tokio_postgres::tls::MakeTlsConnect::<tokio_postgres::Socket>::make_tls_connect(
            &mut self.0,
            domain,
        )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `sslmode=require`/`prefer`: encrypt, but do not check the certificate (libpq's meaning).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct IgnoreHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_password_is_never_displayed() {
        let t = PgTarget::from_url("postgres://alice:s3cret@db.example:6543/tf?sslmode=require")
            .unwrap();
        assert_eq!(t.display, "db.example:6543/tf");
        assert_eq!(t.tls, TlsMode::Require);
        assert!(!t.display.contains("s3cret"));
    }

    #[test]
    fn verify_full_and_root_cert_are_taken_from_the_url() {
        let t = PgTarget::from_url(
            "postgresql://u@localhost/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(t.tls, TlsMode::VerifyFull);
        assert_eq!(
            t.root_cert.as_deref(),
            Some(std::path::Path::new("/tmp/ca.pem"))
        );
    }

    #[test]
    fn bad_sslmode_is_a_clear_error() {
        let e = PgTarget::from_url("postgres://u@h/db?sslmode=always").unwrap_err();
        assert!(e.to_string().contains("sslmode=always"), "{e}");
    }

    #[test]
    fn invalid_url_error_hides_the_password() {
        let e = PgTarget::from_url("postgres://u:pw@h:notaport/db").unwrap_err();
        assert!(!e.to_string().contains("pw@"), "{e}");
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_socket_directory_in_pghost_is_a_unix_socket_without_tls() {
        let t = PgTarget::from_libpq_env(&env(&[
            ("PGHOST", "/var/run/postgresql"),
            ("PGPORT", "5433"),
            ("PGDATABASE", "tf"),
        ]))
        .unwrap();
        assert_eq!(t.display, "/var/run/postgresql/.s.PGSQL.5433/tf");
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn what_the_url_leaves_out_comes_from_the_libpq_variables() {
        let vars = [
            ("PGHOST", "db.internal"),
            ("PGPASSWORD", "hunter2"),
            ("PGUSER", "alice"),
            ("PGSSLMODE", "require"),
            ("PGAPPNAME", "unused"),
        ];
        let t = PgTarget::from_url_with_env(
            "postgres:///tf?host=/run/pg&application_name=mine",
            &env(&vars),
        )
        .unwrap();
        assert_eq!(t.display, "/run/pg/.s.PGSQL.5432/tf");
        assert_eq!(t.config.get_user(), Some("alice"));
        assert_eq!(t.config.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(t.tls, TlsMode::Require);
        assert_eq!(t.config.get_application_name(), Some("mine"));
        // Only what was used is kept from terraform.
        assert_eq!(t.env_used, ["PGUSER", "PGPASSWORD", "PGSSLMODE"]);
    }

    #[test]
    fn several_hosts_and_ports_in_the_libpq_variables() {
        let t = PgTarget::from_libpq_env(&env(&[
            ("PGHOST", "h1,h2"),
            ("PGPORT", "5432,6543"),
            ("PGTARGETSESSIONATTRS", "read-write"),
            ("PGDATABASE", "tf"),
        ]))
        .unwrap();
        assert_eq!(t.display, "h1:5432,h2:6543/tf");
        assert_eq!(
            t.config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let e = PgTarget::from_libpq_env(&env(&[("PGHOST", "h"), ("PGPORT", "54x")])).unwrap_err();
        assert!(e.to_string().contains("PGPORT=54x"), "{e}");
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\n\
             other:5432:tf:alice:wrong\n\
             db.internal:5432:tf:alice:pa\\:ss\n\
             *:*:*:bob:bobs\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.to_string_lossy().into_owned();
        let vars = [
            ("PGHOST", "db.internal"),
            ("PGUSER", "alice"),
            ("PGDATABASE", "tf"),
            ("PGPASSFILE", path.as_str()),
        ];
        let t = PgTarget::from_libpq_env(&env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"pa:ss"[..]));
        assert!(t.env_used.contains(&"PGPASSFILE".to_owned()));
        let t = PgTarget::from_url_with_env("postgres://bob@/x?host=/run/pg", &env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"bobs"[..]));
        // A password in the URL wins; a file others may read is ignored.
        let t = PgTarget::from_url_with_env("postgres://bob:mine@h/x", &env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"mine"[..]));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = PgTarget::from_libpq_env(&env(&vars)).unwrap();
        assert_eq!(t.config.get_password(), None);
    }

    #[test]
    fn pgport_applies_to_url_hosts_without_a_port() {
        let vars = [("PGPORT", "6543")];
        let t = PgTarget::from_url_with_env("postgres://u@h1,h2/tf", &env(&vars)).unwrap();
        assert_eq!(t.display, "h1:6543,h2:6543/tf");
        assert_eq!(t.env_used, ["PGPORT"]);
        let t = PgTarget::from_url_with_env("postgres://u@h1:5433/tf", &env(&vars)).unwrap();
        assert_eq!(t.display, "h1:5433/tf");
        let vars = [("PGPORT", "1,2")];
        let t = PgTarget::from_url_with_env("postgres://[::1],h2/tf", &env(&vars)).unwrap();
        assert_eq!(t.display, "::1:1,h2:2/tf");
    }
}
