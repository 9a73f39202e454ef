//! A terraform `http` state server that holds requests until the test lets
//! them go: a terraform run reading it through `terraform_remote_state`
//! stops there for as long as the test wants (a plan in the middle, a run
//! to kill at a known point).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};

/// A terraform `http` state server for `terraform_remote_state`: requests
/// whose path contains `hold` wait until the test releases them, so that a
/// plan reading it stops in the middle for as long as the test wants.
pub struct Gate {
    pub url: String,
    /// One message each time a held request arrives.
    pub held: mpsc::Receiver<()>,
    /// One message lets one held request go on.
    pub release: mpsc::Sender<()>,
}

impl Gate {
    pub fn start() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (held_tx, held) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                // One thread per request: a held one must not stop the others.
                let (held_tx, release_rx) = (held_tx.clone(), release_rx.clone());
                std::thread::spawn(move || serve(stream, &held_tx, &release_rx));
            }
        });
        Gate { url, held, release }
    }

    /// The `-var` pointing [`GATED`] at this gate: passed through at once
    /// (`"fast"`) or held until released (`"hold"`).
    pub fn var(&self, path: &str) -> String {
        format!("state_url={}/{path}", self.url)
    }
}

/// A fresh workdir holding [`GATED`].
pub fn gated_workdir() -> super::TfWorkdir {
    let wd = super::TfWorkdir::empty();
    wd.write_file("main.tf", GATED);
    wd
}

/// Answers one request of [`Gate`] with a state whose output `gate` is
/// "open", after the test releases it if its path contains `hold`.
fn serve(mut stream: TcpStream, held: &mpsc::Sender<()>, release: &Mutex<mpsc::Receiver<()>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    if request_line.contains("hold")
        && (held.send(()).is_err() || release.lock().unwrap().recv().is_err())
    {
        return;
    }
    let body = r#"{"version":4,"terraform_version":"1.5.0","serial":1,"lineage":"gate","outputs":{"gate":{"value":"open","type":"string"}},"resources":[]}"#;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A configuration whose one resource reads the gate (`var.state_url`).
pub const GATED: &str = r#"
variable "state_url" {
  type = string
}

variable "gen" {
  type    = string
  default = "1"
}

data "terraform_remote_state" "gate" {
  backend = "http"
  config  = { address = var.state_url }
}

resource "terraform_data" "x" {
  input = { gen = var.gen, gate = data.terraform_remote_state.gate.outputs.gate }
}
"#;
