//! `stategraph serve`: terraform's `http` backend over the stored states,
//! driven by the real terraform binary (init, apply, locks both ways with
//! a stategraph apply, `terraform_remote_state`, TLS) and by plain HTTP
//! requests for what terraform does not show (status codes of auth).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::terraform::{path_with_tools, tf_env};
use crate::common::*;

/// A state name shaped like the ones stategraph derives from a checkout.
const STATE: &str = "github.com/acme/infra//envs/prod";

const TOKENS: &str = r#"[
    {"name": "ci", "token": "ci-secret", "scope": "github.com/acme/*", "access": "read-write"},
    {"name": "reader", "username": "reader", "password": "reader-pw", "scope": "*", "access": "read-only"}
]"#;

/// A `stategraph serve` child on a port of its choosing, stopped on drop.
struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` (or https).
    base: String,
    port: u16,
    stderr: Arc<Mutex<String>>,
    /// The thread reading its stderr into `stderr`.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `stategraph serve --listen 127.0.0.1:0 ARGS` on `db` and
    /// waits for the line naming the address it listens on.
    fn start(db: &TestDb, args: &[&str]) -> Server {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("stategraph"));
        cmd.env("CI", "true")
            .env(
                "STATEGRAPH_DATA_DIR",
                "/nonexistent/stategraph-tests-must-not-use-the-embedded-db",
            )
            .env("STATEGRAPH_DATABASE_URL", &db.url)
            .env_remove("STATEGRAPH_STATE")
            .env_remove("STATEGRAPH_SERVE_TOKENS");
        for var in pg::LIBPQ_VARS {
            cmd.env_remove(var);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start stategraph serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split(" on ").nth(1) {
                    if line.starts_with("Serving the states") {
                        let _ = tx.send(rest.split_whitespace().next().unwrap().to_owned());
                    }
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "stategraph serve did not start:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        Server {
            child,
            base,
            port,
            stderr,
            reader: Some(reader),
        }
    }

    /// Stops the server as Ctrl-C or SIGTERM does; returns what it said.
    fn stop(mut self) -> String {
        send_signal(self.child.id(), Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        // The reader has the last lines once the pipe closes.
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        assert!(status.success(), "{status}: {}", self.log());
        self.log()
    }

    fn url(&self, state: &str) -> String {
        format!("{}/state/{state}", self.base)
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// One plain-HTTP request; returns the status and the body.
    fn request(&self, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            send_signal(self.child.id(), Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The resources both terraform (through the backend) and stategraph apply.
/// With `-var gate=PATH`, `gated` is created (again, for each new PATH) and
/// holds the apply (and its locks) until the test creates the file PATH (at
/// most five minutes, then fails); being new, it is in no state written
/// before it is done, so the rows others read meanwhile stay as they were.
const RESOURCES: &str = r#"
variable "gen" {
  type    = string
  default = "1"
}

variable "gate" {
  type    = string
  default = ""
}

resource "terraform_data" "a" {
  input            = { gen = var.gen }
  triggers_replace = [var.gen]
}

resource "terraform_data" "b" {
  input = "unrelated"
}

resource "terraform_data" "gated" {
  count            = var.gate == "" ? 0 : 1
  triggers_replace = [var.gate]

  provisioner "local-exec" {
    command = "for i in $(seq 3000); do [ -e '${var.gate}' ] && exit 0; sleep 0.1; done; exit 1"
  }
}

output "a_gen" {
  value = terraform_data.a.output.gen
}
"#;

/// A resource that only some runs add.
const MORE: &str = "resource \"terraform_data\" \"c\" {}\n";

/// A backend block for `url` with `extra` settings (credentials, TLS).
fn backend(url: &str, extra: &str) -> String {
    format!(
        "terraform {{\n  backend \"http\" {{\n    address        = \"{url}\"\n    \
         lock_address   = \"{url}\"\n    unlock_address = \"{url}\"\n{extra}  }}\n}}\n"
    )
}

/// A workdir whose terraform keeps its state at `url`.
fn terraform_dir(url: &str, extra: &str) -> TfWorkdir {
    let wd = TfWorkdir::empty();
    wd.write_file("backend.tf", &backend(url, extra));
    wd.write_file("main.tf", RESOURCES);
    wd.terraform(&["init", "-no-color", "-input=false"]);
    wd
}

/// The same configuration for stategraph (no backend block).
fn stategraph_dir() -> TfWorkdir {
    let wd = TfWorkdir::empty();
    wd.write_file("main.tf", RESOURCES);
    wd.terraform(&["init", "-no-color", "-backend=false"]);
    wd
}

fn tokens_file(dir: &Path) -> String {
    let path = dir.join("tokens.json");
    std::fs::write(&path, TOKENS).unwrap();
    path.to_str().unwrap().to_owned()
}

const CI_CREDENTIALS: &str = "    username = \"terraform\"\n    password = \"ci-secret\"\n";

#[test]
fn terraform_applies_through_the_backend_and_another_configuration_reads_its_outputs() {
    let db = test_db();
    let tokens = tempfile::tempdir().unwrap();
    let server = Server::start(&db, &["--tokens", &tokens_file(tokens.path())]);
    let tf = terraform_dir(&server.url(STATE), CI_CREDENTIALS);
    let applied = tf.terraform(&["apply", "-auto-approve", "-no-color", "-var", "gen=7"]);
    assert!(text(&applied.stdout).contains("Apply complete! Resources: 2 added"));

    // The rows are stategraph's: listed, and written by the token's name.
    let listed = sg_ok(&db, &["--state", STATE, "state", "list"]);
    assert_eq!(listed, "terraform_data.a\nterraform_data.b\n");
    assert_eq!(input_gen(&db, "terraform_data.a"), "7");
    let log = sg_ok(&db, &["--state", STATE, "log", "--json"]);
    assert!(
        log.contains("http backend POST") && log.contains("\"ci\""),
        "{log}"
    );
    // Each version is in the instance's history, by the same transaction.
    let history = sg_ok(&db, &["--state", STATE, "history", "terraform_data.a"]);
    assert!(
        history.contains("http backend POST") && history.contains("ci"),
        "{history}"
    );
    // terraform unlocked after its apply.
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    // And sees no change: what it reads back is what it wrote.
    let plan = tf
        .command(&["plan", "-detailed-exitcode", "-no-color", "-var", "gen=7"])
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));

    // Another configuration reads the outputs with the read-only login.
    let reader = TfWorkdir::empty();
    reader.write_file(
        "main.tf",
        &format!(
            r#"
data "terraform_remote_state" "prod" {{
  backend = "http"
  config = {{
    address  = "{}"
    username = "reader"
    password = "reader-pw"
  }}
}}

output "seen" {{
  value = data.terraform_remote_state.prod.outputs.a_gen
}}
"#,
            server.url(STATE)
        ),
    );
    reader.terraform(&["init", "-no-color"]);
    reader.terraform(&["apply", "-auto-approve", "-no-color"]);
    let seen = reader.terraform(&["output", "-raw", "seen"]);
    assert_eq!(text(&seen.stdout), "7");

    // What terraform does not show: the answers to each kind of caller.
    let path = format!("/state/{STATE}");
    let ci = Some("Bearer ci-secret");
    let read_only = basic("reader", "reader-pw");
    assert_eq!(server.request("GET", &path, None, "").0, 401);
    assert_eq!(
        server.request("GET", &path, Some("Bearer wrong"), "").0,
        401
    );
    assert_eq!(
        server
            .request("GET", &path, Some(&basic("reader", "nope")), "")
            .0,
        401
    );
    let (status, body) = server.request("GET", &path, Some(&read_only), "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"lineage\"") && body.contains("terraform_data"),
        "{body}"
    );
    let state = body.clone();
    assert_eq!(
        server.request("POST", &path, Some(&read_only), &state).0,
        403
    );
    let lock = r#"{"ID":"x","Operation":"OperationTypeApply","Who":"r@h"}"#;
    assert_eq!(server.request("LOCK", &path, Some(&read_only), lock).0, 403);
    // The token's scope is its prefix.
    assert_eq!(server.request("GET", "/state/elsewhere", ci, "").0, 403);
    assert_eq!(
        server.request("GET", &format!("{path}-nothing"), ci, "").0,
        404
    );
    // A POST naming a lock nobody holds writes nothing.
    let (status, body) = server.request("POST", &format!("{path}?ID=nope"), ci, &state);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not held"), "{body}");
    // A state of an older serial is refused as `state push` refuses it.
    let mut older: serde_json::Value = serde_json::from_str(&state).unwrap();
    older["serial"] = 0.into();
    let (status, body) = server.request("POST", &path, ci, &older.to_string());
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("newer state"), "{body}");
    // terraform with -lock=false: its POST carries no lock ID, so the server
    // locks the whole state for that write alone.
    tf.terraform(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-lock=false",
        "-var",
        "gen=8",
    ]);
    assert_eq!(input_gen(&db, "terraform_data.a"), "8");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    // DELETE empties the state; its rows go to the history.
    assert_eq!(server.request("DELETE", &path, ci, "").0, 200);
    assert_eq!(sg_ok(&db, &["--state", STATE, "state", "list"]), "");
    let history = sg_ok(&db, &["--state", STATE, "history", "terraform_data.a"]);
    assert!(history.contains("removed by transaction"), "{history}");
    let log = sg_ok(&db, &["--state", STATE, "log", "--json"]);
    assert!(log.contains("http backend DELETE"), "{log}");
    // Secrets never reach the server's output; the tokens file, readable
    // by others here, is named as such.
    let log = server.log();
    assert!(log.contains("may be read by other users"), "{log}");
    assert!(
        !log.contains("ci-secret") && !log.contains("reader-pw"),
        "{log}"
    );
}

#[test]
fn terraform_and_stategraph_applies_wait_for_each_others_locks() {
    let db = test_db();
    let server = Server::start(&db, &[]);
    let tf = terraform_dir(&server.url(STATE), "");
    tf.terraform(&["apply", "-auto-approve", "-no-color"]);
    let sg = stategraph_dir();
    let gates = tempfile::tempdir().unwrap();
    let gate = |n: u32| gates.path().join(format!("gate{n}"));
    let gate_var = |n: u32| format!("gate={}", gate(n).display());

    // terraform holds the lock while it applies, until gate 1 opens.
    let mut terraform = tf
        .command(&["apply", "-auto-approve", "-no-color", "-var", &gate_var(1)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_locked(&db, &mut terraform, "terraform's LOCK through the backend");
    let locks = sg_ok(&db, &["locks"]);
    assert!(locks.contains("terraform apply (http backend)"), "{locks}");
    let refused = sg_in(
        &db,
        &sg,
        STATE,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            "gen=3",
            "-lock-timeout=0s",
        ],
    );
    let err = text(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("Error acquiring the state lock")
            && err.contains("terraform apply (http backend)"),
        "{err}"
    );
    // An apply that only adds an instance (its configuration is the stored
    // one and `c`) waits too: terraform's POST would otherwise drop a row
    // it never saw. (Without the state's own lock row it went ahead.)
    let adds = stategraph_dir();
    adds.write_file("more.tf", MORE);
    let mut waiter = spawn_piped(&mut sg_tf(
        &db,
        &adds,
        STATE,
        &["apply", "-auto-approve", "-no-color", "-lock-timeout=5m"],
    ));
    wait_until(
        "the adding apply never queued behind terraform",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || {
            assert_running(&mut waiter, "the adding apply ended before it queued");
            assert_running(&mut terraform, "terraform ended before the gate opened");
            db.psql("SELECT count(*) FROM lock_waiters") == "1"
        },
    );
    std::fs::write(gate(1), "").unwrap();
    let done = terraform.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}{}",
        text(&done.stdout),
        text(&done.stderr)
    );
    let waited = waiter.wait_with_output().unwrap();
    let err = text(&waited.stderr);
    assert!(waited.status.success(), "{}{err}", text(&waited.stdout));
    assert!(
        err.contains("Waiting for lock") && err.contains("terraform apply (http backend)"),
        "{err}"
    );
    // Both writes are there: terraform's, and the row added after it.
    let listed = sg_ok(&db, &["--state", STATE, "state", "list"]);
    assert_eq!(
        listed,
        "terraform_data.a\nterraform_data.b\nterraform_data.c\nterraform_data.gated[0]\n"
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    tf.write_file("more.tf", MORE);
    sg.write_file("more.tf", MORE);

    // stategraph holds rows while it applies gen 4, until gate 2 opens.
    let mut apply = sg_tf(
        &db,
        &sg,
        STATE,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            "gen=4",
            "-var",
            &gate_var(2),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until_locked(&db, &mut apply, "stategraph's apply");
    let refused = tf
        .command(&["plan", "-no-color", "-lock-timeout=0s", "-var", "gen=4"])
        .output()
        .unwrap();
    let err = text(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("Error acquiring the state lock")
            && err.contains("already locked: ID=")
            && err.contains("(stategraph apply"),
        "{err}"
    );
    assert_running(
        &mut apply,
        "stategraph's apply ended before the gate opened",
    );
    std::fs::write(gate(2), "").unwrap();
    let done = apply.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}{}",
        text(&done.stdout),
        text(&done.stderr)
    );
    assert_eq!(input_gen(&db, "terraform_data.a"), "4");
    // terraform reads what stategraph wrote: nothing left to do.
    let plan = tf
        .command(&[
            "plan",
            "-detailed-exitcode",
            "-no-color",
            "-var",
            "gen=4",
            "-var",
            &gate_var(2),
        ])
        .output()
        .unwrap();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}{}",
        text(&plan.stdout),
        text(&plan.stderr)
    );
}

#[test]
fn a_state_with_no_rows_is_locked_against_a_second_locker() {
    let db = test_db();
    let server = Server::start(&db, &[]);
    let path = "/state/new/one";
    let lock = |id: &str| {
        format!(r#"{{"ID":"{id}","Operation":"OperationTypeApply","Who":"alice@laptop"}}"#)
    };
    assert_eq!(server.request("GET", path, None, "").0, 404);
    assert_eq!(server.request("LOCK", path, None, &lock("first")).0, 200);
    let (status, body) = server.request("LOCK", path, None, &lock("second"));
    assert_eq!(status, 423, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["Who"], "alice@laptop", "{body}");
    assert_eq!(info["Path"], "new/one", "{body}");
    let said = info["Info"].as_str().unwrap();
    assert!(said.contains("contested: the whole state"), "{body}");
    let locks = sg_ok(&db, &["locks"]);
    assert!(locks.contains("terraform apply (http backend)"), "{locks}");
    // Only the holder's ID unlocks it.
    assert_eq!(server.request("UNLOCK", path, None, &lock("second")).0, 409);
    assert_eq!(server.request("UNLOCK", path, None, &lock("first")).0, 200);
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(server.request("LOCK", path, None, &lock("second")).0, 200);
    // terraform force-unlock (its http backend sends no ID: the server's
    // lock on the state goes, as a stuck lock's should).
    let tf = terraform_dir(&server.url("new/one"), "");
    let out = tf.terraform_allow_fail(&["force-unlock", "-force", "second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(server.request("LOCK", path, None, &lock("third")).0, 200);
    // A server stopped while terraform holds a lock frees it.
    let said = server.stop();
    assert!(said.contains("freed lock"), "{said}");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}

#[test]
fn terraform_reaches_the_backend_over_tls() {
    let db = test_db();
    let certs = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = Server::start(
        &db,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let url = format!("https://localhost:{}/state/tls", server.port);
    let ca = format!(
        "    client_ca_certificate_pem = <<-EOT\n{}    EOT\n",
        cert.cert.pem()
    );
    let tf = terraform_dir(&url, &ca);
    tf.terraform(&["apply", "-auto-approve", "-no-color", "-var", "gen=5"]);
    assert_eq!(input_gen(&db, "terraform_data.a"), "5");
    // Plain HTTP gets no answer from it.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(stream, "GET /state/tls HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(!answer.contains("terraform_data"), "{answer}");
}

#[test]
fn without_tokens_it_refuses_to_listen_beyond_loopback() {
    let db = test_db();
    let out = stategraph(&db)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("without a tokens file") && err.contains("--tokens"),
        "{err}"
    );
}

#[test]
fn a_bad_tokens_file_stops_the_server_naming_what_is_wrong() {
    let db = test_db();
    let dir = tempfile::tempdir().unwrap();
    let serve = |file: &Path| {
        let out = stategraph(&db)
            .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
            .arg(file)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let missing = dir.path().join("nowhere.json");
    let err = serve(&missing);
    assert!(
        err.contains("cannot read the tokens file") && err.contains("nowhere.json"),
        "{err}"
    );
    let bad = dir.path().join("tokens.json");
    std::fs::write(
        &bad,
        r#"[{"name": "ci", "token": "hunter2-secret", "scope": "*", "access": "admin"}]"#,
    )
    .unwrap();
    let err = serve(&bad);
    assert!(
        err.contains("is not valid")
            && err.contains("entry 1 (\"ci\")")
            && err.contains("use read-write or read-only"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    std::fs::write(&bad, "{\"name\": \"ci\"}").unwrap();
    let err = serve(&bad);
    assert!(err.contains("expected a JSON array"), "{err}");
}

#[test]
fn bad_tls_files_stop_the_server_naming_them() {
    let db = test_db();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let serve = |cert: &Path, key: &Path| {
        let out = stategraph(&db)
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // Swapped: the key file holds no certificate, the certificate no key.
    let err = serve(&key_path, &cert_path);
    assert!(err.contains("holds no") && err.contains("key.pem"), "{err}");
    let err = serve(&cert_path, &dir.path().join("missing.pem"));
    assert!(
        err.contains("cannot read a PEM private key") && err.contains("missing.pem"),
        "{err}"
    );
    // A key of another certificate.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, other.key_pair.serialize_pem()).unwrap();
    let err = serve(&cert_path, &other_key);
    assert!(err.contains("do not go together"), "{err}");
    // The key's contents are never printed.
    let secret = cert.key_pair.serialize_pem();
    let body = secret.lines().nth(1).unwrap();
    assert!(!err.contains(body), "{err}");
}

#[test]
fn the_readme_example_runs() {
    let db = test_db();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme
        .find("### terraform's `http` backend")
        .expect("the README's serve section")..];
    let start = section.find("```sh\n").expect("its example") + "```sh\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    assert!(example.contains("\nPORT=8080\n"), "{example}");
    // Its server is stopped however the script ends (`|| true`: under -e a
    // failing command in the trap is the script's exit status, and the
    // server may be gone between `jobs -p` and `kill`); each command is
    // traced on stderr, shown if it fails.
    let script = format!(
        "set -x\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n{}",
        example.replace("\nPORT=8080\n", &format!("\nPORT={port}\n"))
    );
    let wd = TfWorkdir::empty();
    let path = path_with_tools();
    // At most five minutes (the wait for the server is a loop).
    let mut cmd = Command::new("timeout");
    tf_env(&mut cmd, wd.cli_config());
    cmd.env("PATH", path)
        .env("CI", "true")
        .env("STATEGRAPH_DATABASE_URL", &db.url)
        .env(
            "STATEGRAPH_DATA_DIR",
            "/nonexistent/stategraph-tests-must-not-use-the-embedded-db",
        )
        .env_remove("STATEGRAPH_STATE")
        .env_remove("STATEGRAPH_SERVE_TOKENS");
    for var in pg::LIBPQ_VARS {
        cmd.env_remove(var);
    }
    let out = cmd
        .args([
            "300",
            "bash",
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
        ])
        .arg(&script)
        .current_dir(wd.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // The status says which ended it: the script (1), `timeout` (124), a signal.
    assert!(
        out.status.success(),
        "the README's example ended with {}\n{stdout}{stderr}",
        out.status
    );
    assert!(stdout.contains("seen = \"hello\""), "{stdout}");
    assert_eq!(
        sg_ok(
            &db,
            &[
                "--state",
                "github.com/acme/infra//envs/prod",
                "state",
                "list"
            ]
        ),
        "terraform_data.a\n"
    );
    // The log's line of terraform's write names the token's entry.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" push ") && l.contains(" ci@")),
        "{stdout}"
    );
}
