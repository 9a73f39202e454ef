//! A local AWS API (moto's server) for tests that need a real cloud provider.
//!
//! Owns: starting `python3 -m moto.server` on a free loopback port, waiting
//! until it answers, counting the API requests it served, stopping it on drop,
//! and the terraform workdirs pointed at it (provider block + offline provider
//! mirror). It must never talk to anything but 127.0.0.1, and never skip: a
//! missing moto is a test failure saying what to install.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::terraform::{mirror_cli_config, plugin_mirror, TfWorkdir};

/// Environment variable naming the python interpreter that has moto.
pub const PYTHON_ENV: &str = "STATEGRAPH_PYTHON";

const INSTALL_HINT: &str = "pip install 'moto[server]' (see fixtures/requirements-moto.txt)";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running moto server on 127.0.0.1, killed when dropped.
pub struct Moto {
    port: u16,
    child: Child,
    /// Holds the server's log (one line per request served).
    logdir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers HTTP.
    ///
    /// Panics with an install hint when moto's server cannot be imported.
    pub fn start() -> Moto {
        let python = python_bin();
        check_moto_importable(&python);
        // The port is found free and then handed to moto; another process may
        // take it in between, so retry a few times.
        let mut last_log = String::new();
        for _ in 0..3 {
            match Moto::try_start(&python) {
                Ok(moto) => return moto,
                Err(log) => last_log = log,
            }
        }
        panic!("moto server did not start (python: {python}); its output:\n{last_log}");
    }

    fn try_start(python: &str) -> Result<Moto, String> {
        let port = free_port();
        let logdir = tempfile::Builder::new()
            .prefix("sg-moto-")
            .tempdir()
            .expect("creating a temp dir for the moto log");
        let log_path = logdir.path().join("moto.log");
        let log = fs::File::create(&log_path).expect("creating the moto log");
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the moto log handle"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("could not run {python}: {e}; {INSTALL_HINT}"))?;
        let mut moto = Moto {
            port,
            child,
            logdir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = moto.child.try_wait().expect("polling the moto server") {
                return Err(format!("exited with {status}\n{}", moto.log()));
            }
            if http_status(port, "GET", "/moto-api/").is_some_and(|s| s == 200) {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on 127.0.0.1:{port} after {START_TIMEOUT:?}\n{}",
                    moto.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`, the endpoint for every AWS service.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.logdir.path().join("moto.log")
    }

    /// Number of AWS API requests served so far (moto's own `/moto-api/`
    /// calls, made by this helper, are not counted).
    pub fn request_count(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\" ") && l.contains(" HTTP/") && !l.contains("/moto-api/"))
            .count()
    }

    /// Runs `script` in moto's python with `client(SERVICE)`, a boto3 client
    /// of this server, defined: a change made outside terraform.
    pub fn boto3(&self, script: &str) {
        let prelude = format!(
            "import boto3\n\
             def client(service):\n    \
                 return boto3.client(service, endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='test', aws_secret_access_key='test')\n",
            self.endpoint()
        );
        let python = python_bin();
        let out = Command::new(&python)
            .args(["-c", &format!("{prelude}{script}")])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run {python}: {e}"));
        assert!(
            out.status.success(),
            "boto3 script failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `provider "aws"` block pointing at this server.
    pub fn provider_block(&self) -> String {
        let endpoint = self.endpoint();
        format!(
            r#"# Written by tests/it/common/moto.rs: the local moto server, dummy credentials.
provider "aws" {{
  access_key                  = "test"
  secret_key                  = "test"
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true

  endpoints {{
    ec2 = "{endpoint}"
    s3  = "{endpoint}"
    iam = "{endpoint}"
    sts = "{endpoint}"
  }}
}}
"#
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private copy of `fixtures/tf/<fixture>` set up for moto: `moto_provider.tf`
/// holds the provider block and the CLI config installs `hashicorp/aws` from
/// the offline filesystem mirror, so `terraform init` needs no network.
pub fn aws_workdir(moto: &Moto, fixture: &str) -> TfWorkdir {
    let wd = TfWorkdir::from_fixture_with_cli_config(fixture, &mirror_cli_config(&plugin_mirror()));
    wd.write_file("moto_provider.tf", &moto.provider_block());
    wd
}

/// [`aws_workdir`] followed by `terraform init` and `terraform apply`: the
/// workdir's `terraform.tfstate` is a real aws state (about 20 s for
/// `aws_small` on 2 cores, most of it provider start-up).
pub fn produce_aws_state(moto: &Moto, fixture: &str) -> TfWorkdir {
    let wd = aws_workdir(moto, fixture);
    wd.terraform(&["init", "-input=false", "-no-color"]);
    wd.terraform(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    wd
}

/// The python interpreter: `$STATEGRAPH_PYTHON`, else `python3`.
pub fn python_bin() -> String {
    std::env::var(PYTHON_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

fn check_moto_importable(python: &str) {
    let out = Command::new(python)
        .args(["-c", "import moto.server, flask, flask_cors"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("could not run {python} ({e}); the aws tests need python3 with moto: {INSTALL_HINT}")
        });
    assert!(
        out.status.success(),
        "moto's server is not importable by {python}; the aws tests need it: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|l| l.local_addr())
        .expect("finding a free port on 127.0.0.1")
        .port()
}

/// The HTTP status of one request to 127.0.0.1:`port`, or None if it failed.
fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace().nth(1)?.parse().ok()
}
