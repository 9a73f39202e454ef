//! TLS to PostgreSQL against a real server: a private CA (made with the
//! openssl CLI) signs the server certificate of a separate ephemeral cluster
//! that refuses every connection not over TLS, and the real `stategraph`
//! binary connects with each `sslmode` of libpq that it honours.
//!
//! Because pg_hba.conf holds only `hostssl ... trust` and
//! `hostnossl ... reject`, every successful run below is itself proof that
//! stategraph's connections were encrypted; the server log (log_connections)
//! and pg_stat_ssl confirm it.

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use assert_cmd::Command;

use crate::common::pg::{start_cluster_with, ClusterHandle};
use crate::common::{stategraph_without_db, text};

/// Put in every URL given to stategraph: it must never be printed.
const PASSWORD: &str = "s3cretpw";
/// A name the server certificate does not carry; connections to it go to
/// 127.0.0.1 through libpq's `hostaddr`, so it is reachable but mismatched.
const OTHER_NAME: &str = "db.stategraph.test";

/// The TLS-only cluster and the CA files clients may trust.
struct TlsCluster {
    cluster: ClusterHandle,
    /// The CA that signed the server certificate.
    ca: PathBuf,
    /// An unrelated CA.
    other_ca: PathBuf,
}

fn tls_cluster() -> &'static TlsCluster {
    static TLS: OnceLock<TlsCluster> = OnceLock::new();
    TLS.get_or_init(start_tls_cluster)
}

fn openssl() -> PathBuf {
    let path = Path::new("/usr/bin/openssl");
    if path.is_file() {
        return path.to_owned();
    }
    // Elsewhere on PATH is fine too; not found at all is a failure.
    match StdCommand::new("openssl")
        .arg("version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => PathBuf::from("openssl"),
        _ => panic!(
            "the TLS tests need the openssl command-line tool (/usr/bin/openssl) to make their \
certificates, and it is not installed: apt-get install openssl (./install.sh does it)"
        ),
    }
}

/// Runs openssl with `args` in `dir`, panicking with its stderr on failure.
fn run_openssl(openssl: &Path, dir: &Path, args: &[&str]) {
    let out = StdCommand::new(openssl)
        .args(args)
        .current_dir(dir)
        .env_remove("OPENSSL_CONF")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", openssl.display()));
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificate extensions, in a config file of our own so that the
/// system's openssl.cnf does not matter.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Makes `ca.pem`, `other-ca.pem`, and `server.crt`/`server.key` (signed by
/// `ca.pem`, for localhost and 127.0.0.1) in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = openssl();
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    for (name, cn) in [
        ("ca", "stategraph test CA"),
        ("other-ca", "unrelated test CA"),
    ] {
        let subj = format!("/CN={cn}");
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509", "-config", "openssl.cnf"];
        args.extend(ec);
        args.extend([
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
            "-extensions",
            "ca_ext",
        ]);
        run_openssl(&openssl, dir, &args);
    }
    let mut args = vec!["req", "-new", "-config", "openssl.cnf"];
    args.extend(ec);
    args.extend([
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run_openssl(&openssl, dir, &args);
    run_openssl(
        &openssl,
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "0x5e1f",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server_ext",
            "-out",
            "server.crt",
        ],
    );
    // The server certificate really is what the tests below assume.
    let out = StdCommand::new(&openssl)
        .args(["x509", "-noout", "-text", "-in", "server.crt"])
        .current_dir(dir)
        .output()
        .expect("run openssl x509");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
        "server certificate lacks the expected subjectAltName:\n{text}"
    );
    run_openssl(
        &openssl,
        dir,
        &["verify", "-CAfile", "ca.pem", "server.crt"],
    );
}

fn start_tls_cluster() -> TlsCluster {
    let certs = tempfile::Builder::new()
        .prefix("stategraph-tls-certs-")
        .tempdir()
        .expect("temp dir for certificates");
    make_certificates(certs.path());
    let read = |name: &str| std::fs::read(certs.path().join(name)).unwrap();
    let (cert, key) = (read("server.crt"), read("server.key"));
    let hba = b"\
# Only TLS connections from 127.0.0.1; anything unencrypted is refused.
hostssl   all all 127.0.0.1/32 trust
hostnossl all all 0.0.0.0/0    reject
";
    let cluster = start_cluster_with(
        "ssl = on\n\
         ssl_cert_file = 'server.crt'\n\
         ssl_key_file = 'server.key'\n\
         log_connections = on\n",
        &[
            ("server.crt", &cert),
            ("server.key", &key),
            ("pg_hba.conf", hba),
        ],
    );
    // The CA files go in the cluster's directory, removed with it.
    let ca = cluster.dir.join("ca.pem");
    let other_ca = cluster.dir.join("other-ca.pem");
    std::fs::write(&ca, read("ca.pem")).unwrap();
    std::fs::write(&other_ca, read("other-ca.pem")).unwrap();
    let tls = TlsCluster {
        cluster,
        ca,
        other_ca,
    };
    let on = tls.cluster.psql(&tls.admin_url(), "SHOW ssl");
    assert_eq!(
        on,
        "on",
        "ssl is not on in the test cluster:\n{}",
        tls.cluster.log()
    );
    tls
}

impl TlsCluster {
    fn port(&self) -> u16 {
        self.cluster.port
    }

    /// psql's URL for database `db`: TLS required, certificate not checked.
    fn psql_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=require",
            self.port()
        )
    }

    fn admin_url(&self) -> String {
        self.psql_url("postgres")
    }

    /// A new, empty database (created over TLS).
    fn new_db(&self, prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "tls_{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.cluster
            .psql(&self.admin_url(), &format!("CREATE DATABASE {name}"));
        name
    }

    /// stategraph's URL: user and password, `host`, this cluster's port,
    /// `db`, and `query` (without the `?`).
    fn url(&self, host: &str, db: &str, query: &str) -> String {
        let port = self.port();
        let url = format!("postgres://postgres:{PASSWORD}@{host}:{port}/{db}");
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }
}

/// The real binary with `--database-url url` and nothing else to go on: no
/// libpq variables, no embedded database to fall back on.
fn stategraph(url: &str) -> Command {
    let mut cmd = stategraph_without_db();
    cmd.arg("--database-url").arg(url);
    cmd
}

/// `stategraph --database-url URL --state t log`.
fn list(url: &str) -> Output {
    stategraph(url)
        .args(["--state", "t", "log"])
        .output()
        .expect("run stategraph")
}

/// Asserts that `out` succeeded with empty stdout (an empty log prints nothing).
#[track_caller]
fn assert_connected(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: stategraph failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        tls_cluster().cluster.log()
    );
    assert_eq!(text(&out.stdout), "", "{what}: an empty log prints nothing");
    assert_no_password(what, out);
}

/// Asserts that `out` failed to connect to `display` (`host:port/db`) and
/// returns its stderr.
#[track_caller]
fn assert_refused(what: &str, out: &Output, display: &str) -> String {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: stategraph unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{err}",
        text(&out.stdout)
    );
    assert!(
        err.contains(&format!("cannot connect to PostgreSQL at {display}")),
        "{what}: the error should name {display}:\n{err}"
    );
    assert_no_password(what, out);
    eprintln!("{what}: refused as expected:\n{err}");
    err
}

#[track_caller]
fn assert_no_password(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text(bytes).contains(PASSWORD),
            "{what}: the password appears in {stream}:\n{}",
            text(bytes)
        );
    }
}

#[test]
fn sslmode_disable_is_refused_by_a_tls_only_server_without_showing_the_password() {
    let tls = tls_cluster();
    let db = tls.new_db("disable");
    let port = tls.port();

    for host in ["localhost", "127.0.0.1"] {
        let what = format!("sslmode=disable to {host}");
        let out = list(&tls.url(host, &db, "sslmode=disable"));
        let err = assert_refused(&what, &out, &format!("{host}:{port}/{db}"));
        // The server's own refusal, not some client-side problem.
        assert!(
            err.contains("pg_hba.conf rejects connection") && err.contains("no encryption"),
            "{what}: expected the server to refuse the unencrypted connection:\n{err}"
        );
    }

    // Nothing got in: the database is still empty of stategraph's tables.
    let tables = tls.cluster.psql(
        &tls.psql_url(&db),
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables, "0");
}

#[test]
fn sslmode_require_and_prefer_encrypt_without_checking_the_certificate() {
    let tls = tls_cluster();
    let db = tls.new_db("require");
    for host in ["localhost", "127.0.0.1"] {
        assert_connected(
            &format!("sslmode=require to {host}"),
            &list(&tls.url(host, &db, "sslmode=require")),
        );
    }
    // A name the certificate does not carry does not matter to require.
    assert_connected(
        "sslmode=require to a mismatched name",
        &list(&tls.url(OTHER_NAME, &db, "hostaddr=127.0.0.1&sslmode=require")),
    );
    // libpq's default, prefer, upgrades to TLS when the server offers it
    // (this server takes nothing else).
    assert_connected("no sslmode (prefer)", &list(&tls.url("localhost", &db, "")));
    assert_connected(
        "sslmode=prefer",
        &list(&tls.url("localhost", &db, "sslmode=prefer")),
    );
    // The runs above migrated the database.
    let states = tls
        .cluster
        .psql(&tls.psql_url(&db), "SELECT count(*) FROM states");
    assert_eq!(states, "0");
}

#[test]
fn sslmode_verify_full_accepts_the_right_ca_and_host_name() {
    let tls = tls_cluster();
    let db = tls.new_db("verify_full");
    let ca = tls.ca.to_str().unwrap();
    // By DNS name, and by the IP address the certificate also names.
    for host in ["localhost", "127.0.0.1"] {
        assert_connected(
            &format!("verify-full with the right CA to {host}"),
            &list(&tls.url(host, &db, &format!("sslmode=verify-full&sslrootcert={ca}"))),
        );
    }
}

#[test]
fn sslmode_verify_full_and_verify_ca_refuse_a_certificate_from_another_ca() {
    let tls = tls_cluster();
    let db = tls.new_db("wrong_ca");
    let port = tls.port();
    let display = format!("localhost:{port}/{db}");
    let other = tls.other_ca.to_str().unwrap();

    for mode in ["verify-full", "verify-ca"] {
        let what = format!("{mode} with an unrelated CA");
        let out = list(&tls.url(
            "localhost",
            &db,
            &format!("sslmode={mode}&sslrootcert={other}"),
        ));
        let err = assert_refused(&what, &out, &display);
        assert!(
            err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
            "{what}: expected an unknown-issuer certificate error:\n{err}"
        );
    }

    // As in libpq, require with a root certificate checks the chain.
    let what = "require with sslrootcert of an unrelated CA";
    let out = list(&tls.url(
        "localhost",
        &db,
        &format!("sslmode=require&sslrootcert={other}"),
    ));
    let err = assert_refused(what, &out, &display);
    assert!(err.contains("UnknownIssuer"), "{what}: {err}");

    // Without sslrootcert the public web roots are trusted, and our private
    // CA is not among them.
    let what = "verify-full with the default roots";
    let out = list(&tls.url("localhost", &db, "sslmode=verify-full"));
    let err = assert_refused(what, &out, &display);
    assert!(
        err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "{what}: expected an unknown-issuer certificate error:\n{err}"
    );

    // Nothing got in.
    let tables = tls.cluster.psql(
        &tls.psql_url(&db),
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables, "0");
}

#[test]
fn verify_full_refuses_a_host_name_mismatch_that_verify_ca_accepts() {
    let tls = tls_cluster();
    let db = tls.new_db("name");
    let port = tls.port();
    let ca = tls.ca.to_str().unwrap();
    // The server is reached at 127.0.0.1 (hostaddr), but the name checked
    // against its certificate is OTHER_NAME, which it does not carry.
    let url = |mode: &str| {
        tls.url(
            OTHER_NAME,
            &db,
            &format!("hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={ca}"),
        )
    };

    let what = "verify-full to a name the certificate does not carry";
    let out = list(&url("verify-full"));
    let err = assert_refused(what, &out, &format!("{OTHER_NAME}:{port}/{db}"));
    assert!(
        err.contains("invalid peer certificate")
            && err.contains("not valid for name")
            && err.contains(OTHER_NAME),
        "{what}: expected a name-mismatch certificate error:\n{err}"
    );

    assert_connected(
        "verify-ca to a name the certificate does not carry",
        &list(&url("verify-ca")),
    );
    assert_connected(
        "verify-ca to localhost",
        &list(&tls.url(
            "localhost",
            &db,
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        )),
    );
}

#[test]
fn a_state_pushed_over_verified_tls_is_stored_and_read_back() {
    let tls = tls_cluster();
    let db = tls.new_db("push");
    let ca = tls.ca.to_str().unwrap();
    let url = tls.url(
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tiny.tfstate");
    let lineage = "5d0f1a52-7c3e-4b8e-9a61-3f2b7c0d9e14";
    std::fs::write(
        &state,
        format!(
            r#"{{
  "version": 4,
  "terraform_version": "1.9.8",
  "serial": 1,
  "lineage": "{lineage}",
  "outputs": {{
    "greeting": {{ "value": "hello over tls", "type": "string" }}
  }},
  "resources": [],
  "check_results": null
}}
"#
        ),
    )
    .unwrap();

    let out = stategraph(&url)
        .args(["--state", "tiny", "state", "push"])
        .arg(&state)
        .output()
        .expect("run stategraph");
    assert!(
        out.status.success(),
        "push over verify-full failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_no_password("push", &out);

    // Stored, as seen by psql over TLS; and psql's own session is encrypted.
    let psql_url = tls.psql_url(&db);
    assert_eq!(
        tls.cluster.psql(&psql_url, "SELECT count(*) FROM states"),
        "1"
    );
    assert_eq!(
        tls.cluster.psql(
            &psql_url,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        "t"
    );

    // Read back over TLS.
    let out = stategraph(&url)
        .args(["--state", "tiny", "state", "pull"])
        .output()
        .expect("run stategraph");
    assert!(
        out.status.success(),
        "pull over verify-full failed:\n{}",
        text(&out.stderr)
    );
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pulled JSON");
    assert_eq!(pulled["lineage"], lineage);
    assert_eq!(pulled["serial"], 1);
    assert_eq!(pulled["outputs"]["greeting"]["value"], "hello over tls");

    // The server logged every stategraph connection to this database as
    // encrypted (log_connections): there were some, and none was plain.
    let log = tls.cluster.log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("connection authorized")
                && l.contains(&format!("database={db} "))
                && l.contains("application_name=stategraph")
        })
        .collect();
    assert!(
        !ours.is_empty(),
        "no stategraph connection to {db} in the server log:\n{log}"
    );
    for line in &ours {
        assert!(
            line.contains("SSL enabled"),
            "a stategraph connection was not encrypted: {line}"
        );
    }
}
