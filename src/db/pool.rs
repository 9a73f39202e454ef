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
use tokio_postgres::config::{Host, SslMode};
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
}

impl PgTarget {
    /// Parses a `postgres://` URL (or a libpq `key=value` string), taking
    /// `sslmode` and `sslrootcert` ourselves since tokio-postgres knows only
    /// part of them.
    pub fn from_url(url: &str) -> Result<PgTarget> {
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v);
                match k {
                    "sslmode" => tls = TlsMode::parse(&v)?,
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
                    Some(("sslmode", v)) => tls = TlsMode::parse(v)?,
                    Some(("sslrootcert", v)) => root_cert = Some(PathBuf::from(v)),
                    _ => kept.push(word),
                }
            }
            kept.join(" ")
        };
        let config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            anyhow!(
                "the database URL is not valid: {e}\n\nExpected postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=require]"
            )
        })?;
        Ok(PgTarget::new(config, tls, root_cert))
    }

    /// Builds a target from the libpq variables (`PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGCONNECT_TIMEOUT`).
    pub fn from_libpq_env(get: &dyn Fn(&str) -> Option<String>) -> Result<PgTarget> {
        let mut config = tokio_postgres::Config::new();
        let host = get("PGHOST").unwrap_or_else(|| "localhost".to_owned());
        for h in host.split(',') {
            config.host(h);
        }
        if let Some(port) = get("PGPORT") {
            let port: u16 = port
                .parse()
                .with_context(|| format!("PGPORT={port} is not a port number"))?;
            config.port(port);
        }
        let user = get("PGUSER")
            .or_else(|| get("USER"))
            .unwrap_or_else(|| "postgres".to_owned());
        config.user(&user);
        if let Some(pw) = get("PGPASSWORD") {
            config.password(pw);
        }
        config.dbname(get("PGDATABASE").unwrap_or(user));
        if let Some(t) = get("PGCONNECT_TIMEOUT").and_then(|t| t.parse().ok()) {
            config.connect_timeout(Duration::from_secs(t));
        }
        let tls = match get("PGSSLMODE") {
            Some(m) => TlsMode::parse(&m)?,
            None => TlsMode::Prefer,
        };
        Ok(PgTarget::new(
            config,
            tls,
            get("PGSSLROOTCERT").map(PathBuf::from),
        ))
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
        let display = describe(&config);
        PgTarget {
            config,
            tls,
            root_cert,
            display,
        }
    }

    /// Opens a pool of at most `size` connections and checks that one connects.
    pub async fn connect(&self, size: usize) -> Result<Pool> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // tokio-postgres asks the TLS connector for a server name even when
        // TLS is off, and rustls refuses the empty name of a unix socket.
        let manager = if self.tls == TlsMode::Disable {
            Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager_config)
        } else {
            let tls = MakeRustlsConnect::new(self.rustls_config()?);
            Manager::from_config(self.config.clone(), tls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(size)
            .build()
            .context("cannot build the connection pool")?;
        if let Err(e) = pool.get().await {
            return Err(anyhow!(
                "cannot connect to PostgreSQL at {}: {}\n\n{}",
                self.display,
                connect_error_text(&e),
                "Check that the server is running and reachable, and the URL, user and password \
(--database-url / STATEGRAPH_DATABASE_URL, or the PG* variables). Without any of them stategraph \
uses its embedded database."
            ));
        }
        Ok(pool)
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

/// The innermost cause of a pool error, as a short sentence.
fn connect_error_text(e: &deadpool_postgres::PoolError) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
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
}
