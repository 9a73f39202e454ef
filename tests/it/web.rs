//! The read-only page of `stategraph serve` (issue 18, point 5), in a real
//! headless Chromium: a state two real applies wrote is served, the page
//! loaded with `?state=...&cone=...`, its DOM (after the script ran)
//! checked for the states, the transaction timeline, the asked instance's
//! history with its secret masked, and the locks; its screenshot decoded and
//! the cone's write-set and read-set colours found in the graph (and not
//! found when no cone is asked). Live locks and the lock queue are checked
//! while an apply holds its locks and another waits.
//!
//! Chromium is found as `$STATEGRAPH_TEST_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on `PATH` (`./install.sh
//! --deps-only` installs Debian's `chromium`); without it these tests fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// `stategraph serve` on a free port, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `stategraph serve --listen 127.0.0.1:0` and reads the address
    /// it bound from the line that names it.
    fn start(db: &TestDb, wd: &TfWorkdir) -> Server {
        let mut child = sg_wd(db, wd, &["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stategraph serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let url = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).expect("read serve's stderr") == 0 {
                panic!("serve ended without saying where it listens:\n{said}");
            }
            said.push_str(&line);
            if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                break url.to_owned();
            }
        };
        // Keep draining what it prints so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
        });
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium: `$STATEGRAPH_TEST_CHROMIUM`, else the first of its usual names
/// on `PATH`.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("STATEGRAPH_TEST_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the web tests need Chromium and none was found: no chromium, chromium-browser or \
         google-chrome on PATH. Install it (`./install.sh --deps-only` installs Debian's \
         chromium package) or set STATEGRAPH_TEST_CHROMIUM to its path."
    )
}

/// The window every load uses: the DOM's geometry and the screenshot's
/// pixels then agree.
const WINDOW: (u32, u32) = (1280, 1000);

/// Headless Chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=FILE`), after the page's script ran (virtual time: no
/// waiting on the clock). Flags that keep it off the network: this machine's
/// network is closed and it would hang on connections.
fn chromium_run(url: &str, action: &str, profile: &Path) -> Output {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.display()),
            action,
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start Chromium as {} (from $STATEGRAPH_TEST_CHROMIUM or PATH): {e}",
                chromium().display()
            )
        });
    // Read both pipes while it runs; give up (and kill it) after 120 s.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let done = poll_until(Duration::from_secs(120), Duration::from_millis(100), || {
        child.try_wait().unwrap().is_some()
    });
    if !done {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let output = Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    assert!(
        done && output.status.success(),
        "chromium {action} {url} failed (or took over 120 s): {}\n{}",
        output.status,
        text(&output.stderr)
    );
    output
}

/// The page's DOM once its script has run.
fn dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let dom = text(&chromium_run(url, "--dump-dom", profile.path()).stdout);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never finished loading:\n{dom}"
    );
    dom
}

/// The screenshot of the page as RGB rows.
struct Shot {
    width: usize,
    rgb: Vec<u8>,
}

fn screenshot(url: &str) -> Shot {
    let profile = tempfile::tempdir().unwrap();
    let file = profile.path().join("page.png");
    chromium_run(
        url,
        &format!("--screenshot={}", file.display()),
        &profile.path().join("profile"),
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&file).expect("chromium wrote the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "an RGB screenshot: {:?}", info.color_type);
    assert_eq!(
        (info.width, info.height),
        WINDOW,
        "the screenshot has the window's size"
    );
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Shot {
        width: info.width as usize,
        rgb,
    }
}

impl Shot {
    /// Pixels of exactly `colour` inside `rect` (x, y, width, height).
    fn count(&self, colour: [u8; 3], rect: [usize; 4]) -> usize {
        let [x0, y0, w, h] = rect;
        (y0..y0 + h)
            .flat_map(|y| (x0..x0 + w).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let i = (y * self.width + x) * 3;
                self.rgb[i..i + 3] == colour
            })
            .count()
    }
}

/// `#rrggbb` as bytes.
fn rgb(hex: &str) -> [u8; 3] {
    let h = hex.trim_start_matches('#');
    let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).unwrap();
    [byte(0), byte(2), byte(4)]
}

/// Where the graph is drawn: the page writes its box into `data-rect`.
fn graph_rect(dom: &str) -> [usize; 4] {
    let start = dom
        .find("data-rect=\"")
        .expect("the graph's box in the DOM")
        + 11;
    let end = start + dom[start..].find('"').unwrap();
    let v: Vec<usize> = dom[start..end]
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    let rect = [v[0], v[1], v[2], v[3]];
    assert!(
        rect[2] > 200 && rect[3] > 200 && rect[0] + rect[2] <= WINDOW.0 as usize,
        "the graph has room on the page: {rect:?}"
    );
    assert!(
        rect[1] + rect[3] <= WINDOW.1 as usize,
        "the graph is in the window: {rect:?}"
    );
    rect
}

/// `key=value&...` with the value percent-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

const DB: &str = "terraform_data.db";

#[test]
fn the_page_draws_the_cone_in_its_colours_and_shows_states_timeline_and_history() {
    let db = test_db();
    let wd = store_small_graph(&db);
    // A second state, so that the list has more than the one shown.
    let other = TfWorkdir::empty();
    other.write_file("main.tf", "resource \"terraform_data\" \"x\" {}\n");
    assert_ok(
        "apply of other",
        &sg_in(
            &db,
            &other,
            "other",
            &["apply", "-auto-approve", "-no-color"],
        ),
    );
    let log: Value = serde_json::from_str(
        &assert_ok("log", &sg_in(&db, &wd, SMALL_GRAPH, &["log", "--json"])).0,
    )
    .unwrap();
    let txns: Vec<i64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(txns.len() >= 2, "two applies: {log}");

    let server = Server::start(&db, &wd);
    let with_cone = format!(
        "{}/?{}",
        server.url,
        query(&[("state", SMALL_GRAPH), ("cone", DB)])
    );
    let page = dom(&with_cone);

    // The states, the one shown selected.
    assert!(
        page.contains(">shop</a>") && page.contains(">other</a>"),
        "{page}"
    );
    // The timeline: every transaction of the state, one row each.
    for id in &txns {
        assert!(
            page.contains(&format!("data-txn=\"{id}\"")),
            "transaction {id} missing:\n{page}"
        );
    }
    assert_eq!(page.matches("data-txn=").count(), txns.len(), "{page}");
    // The cone's summary and the history of the asked instance: two
    // versions, the password masked.
    assert!(
        page.contains("Cone of terraform_data.db: 1 to write, 2 to read, of 6 instances."),
        "{page}"
    );
    assert!(page.contains(&format!(">{DB}</span>")), "{page}");
    assert_eq!(page.matches("data-version=").count(), 2, "{page}");
    assert!(page.contains("(sensitive value)"), "{page}");
    assert!(
        !page.contains("pw-1") && !page.contains("pw-2"),
        "a secret on the page:\n{page}"
    );
    assert!(page.contains("No locks are held."), "{page}");
    assert!(page.contains("Nobody is waiting."), "{page}");

    // The screenshot: the write set (db) and the read set (net, base) in
    // their colours, inside the graph.
    let rect = graph_rect(&page);
    let write = rgb(stategraph::graph::render::WRITE_COLOUR);
    let read = rgb(stategraph::graph::render::READ_COLOUR);
    let shot = screenshot(&with_cone);
    let (w, r) = (shot.count(write, rect), shot.count(read, rect));
    assert!(w > 200, "write-set colour in the graph: {w} pixels");
    assert!(
        r > 2 * 200,
        "read-set colour (two nodes) in the graph: {r} pixels"
    );

    // Without a cone, neither colour is in the graph.
    let plain = format!("{}/?{}", server.url, query(&[("state", SMALL_GRAPH)]));
    let plain_dom = dom(&plain);
    assert!(plain_dom.contains("No resource selected."), "{plain_dom}");
    let rect = graph_rect(&plain_dom);
    let shot = screenshot(&plain);
    assert_eq!(shot.count(write, rect), 0, "write colour with no cone");
    assert_eq!(shot.count(read, rect), 0, "read colour with no cone");
    // ... but the graph is drawn: the nodes' default fill is there.
    assert!(
        shot.count(rgb("#dfe6ec"), rect) > 6 * 200,
        "the nodes are drawn"
    );

    // A resource of two instances: its cone, and no history of its own
    // (each instance has one).
    let resource = dom(&format!(
        "{}/?{}",
        server.url,
        query(&[("state", SMALL_GRAPH), ("cone", "terraform_data.app")])
    ));
    assert!(
        resource.contains("Cone of terraform_data.app: 2 to write, 2 to read, of 6 instances."),
        "{resource}"
    );
    assert!(
        resource.contains("terraform_data.app is not one instance: click one in the graph"),
        "{resource}"
    );
    assert_eq!(resource.matches("data-version=").count(), 0, "{resource}");
}

#[test]
fn the_page_shows_live_locks_and_the_queue() {
    let db = test_db();
    let wd = store_small_graph(&db);
    // One apply holds its locks while it waits for approval; a second
    // waits in the queue for them.
    let mut holder = sg_tf(
        &db,
        &wd,
        SMALL_GRAPH,
        &["apply", "-no-color", "-var", "gen=3"],
    )
    .env("TF_INPUT", "1")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until_locked(&db, &mut holder, "the holder never locked");
    let mut waiter = spawn_piped(&mut sg_tf(
        &db,
        &wd,
        SMALL_GRAPH,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-lock-timeout=10m",
            "-var",
            "gen=4",
        ],
    ));
    wait_until(
        "the second apply never queued",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || {
            assert_running(&mut waiter, "the second apply ended before it queued");
            db.psql("SELECT count(*) FROM lock_waiters") == "1"
        },
    );
    let holder_id = db.psql("SELECT id FROM lock_holders");
    let ticket = db.psql("SELECT id FROM lock_waiters");

    let server = Server::start(&db, &wd);
    let page = dom(&format!(
        "{}/?{}",
        server.url,
        query(&[("state", SMALL_GRAPH)])
    ));

    // Both runs finish: the waiter gives up (Ctrl-C), the holder applies.
    send_signal(waiter.id(), nix::sys::signal::Signal::SIGINT);
    let _ = waiter.wait();
    holder.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    assert_ok("the holder", &holder.wait_with_output().unwrap());

    let locks = section(&page, "id=\"locks\"", "<h3>Queue</h3>");
    assert!(locks.contains(&format!("<td>{holder_id}</td>")), "{locks}");
    assert!(locks.contains("stategraph apply"), "{locks}");
    assert!(locks.contains("until "), "a live lease: {locks}");
    let queue = section(&page, "id=\"queue\"", "</section>");
    assert!(queue.contains(&format!("<td>{ticket}</td>")), "{queue}");
    assert_eq!(
        queue.matches("<tr").count(),
        2,
        "a header and one waiter: {queue}"
    );
}

/// `GET path` on the server over plain HTTP/1.1: the status, the header
/// lines (names lowercased) and the body.
fn get(server: &Server, path: &str) -> (u16, String, String) {
    let authority = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP response: {response}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let headers = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}:{value}\n", name.to_ascii_lowercase()),
            None => format!("{l}\n"),
        })
        .collect();
    (status, headers, body.to_owned())
}

/// The `error` of a JSON error body.
fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_owned()
}

#[test]
fn the_api_answers_json_and_names_what_is_wrong() {
    let db = test_db();
    let wd = store_small_graph(&db);
    let server = Server::start(&db, &wd);

    let (status, _, body) = get(&server, "/api/states");
    assert_eq!(status, 200, "{body}");
    let states: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(states["states"], serde_json::json!([SMALL_GRAPH]), "{body}");

    // The graph with a cone is what `stategraph deps --format json` says of
    // it, on the whole graph: the same write and read sets.
    let (status, _, body) = get(
        &server,
        &format!(
            "/api/graph?{}",
            query(&[("state", SMALL_GRAPH), ("cone", DB)])
        ),
    );
    assert_eq!(status, 200, "{body}");
    let graph: Value = serde_json::from_str(&body).unwrap();
    let deps: Value = serde_json::from_str(
        &assert_ok(
            "deps",
            &sg_in(&db, &wd, SMALL_GRAPH, &["deps", "--format", "json", DB]),
        )
        .0,
    )
    .unwrap();
    assert_eq!(graph["write"], deps["write"], "{body}");
    assert_eq!(graph["read"], deps["read"], "{body}");
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 6, "{body}");

    // The history: two versions, the password masked.
    let (status, _, body) = get(
        &server,
        &format!(
            "/api/history?{}",
            query(&[("state", SMALL_GRAPH), ("address", DB)])
        ),
    );
    assert_eq!(status, 200, "{body}");
    let versions: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2, "{body}");
    assert!(
        body.contains("(sensitive value)") && !body.contains("pw-2"),
        "{body}"
    );

    // What is wrong, named.
    let (status, _, body) = get(&server, "/api/graph?state=nope");
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_of(&body), "no state named \"nope\"");
    let (status, _, body) = get(
        &server,
        &format!(
            "/api/graph?{}",
            query(&[("state", SMALL_GRAPH), ("cone", "terraform_data.nope")])
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("terraform_data.nope"), "{body}");
    let (status, _, body) = get(
        &server,
        &format!(
            "/api/history?{}",
            query(&[("state", SMALL_GRAPH), ("address", "not an address")])
        ),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(&server, "/assets/nope.js");
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_of(&body), "no asset nope.js");

    let (status, _, body) = get(&server, "/api/log?state=nope");
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_of(&body), "no state named \"nope\"");

    // The page and its assets come from the binary; the page runs only its
    // own scripts and is never framed.
    let (status, headers, body) = get(&server, "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/assets/app.js"), "{body}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{headers}"
    );
    assert!(headers.contains("frame-ancestors 'none'"), "{headers}");
    let (status, headers, body) = get(&server, "/assets/vendor/cytoscape/cytoscape.min.js");
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-type: text/javascript")
            && headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    assert!(body.len() > 100_000, "cytoscape.js is served whole");
}

/// The part of `page` from `from` to the next `to`.
fn section<'a>(page: &'a str, from: &str, to: &str) -> &'a str {
    let start = page
        .find(from)
        .unwrap_or_else(|| panic!("{from} in {page}"));
    let end = start + page[start..].find(to).unwrap_or(page.len() - start);
    &page[start..end]
}
