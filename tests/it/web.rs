//! The read-only page of `stategraph serve` (issue 18, point 5), in a real
//! headless Chromium: a state two real applies wrote is served, the page
//! loaded with `?state=...&cone=...`, its DOM (after the script ran)
//! checked for the states, the transaction timeline, the asked instance's
//! history with its secret masked, and the locks; its screenshot decoded and
//! the cone's write-set and read-set colours found in the graph (and not
//! found when no cone is asked). Live locks and the lock queue are checked
//! while an apply holds its locks and another waits. Through chromedriver
//! (WebDriver), a click on an instance in the graph marks its cone and shows
//! its history. The JSON API is checked over plain HTTP.
//!
//! Chromium is found as `$STATEGRAPH_TEST_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on `PATH`; chromedriver as
//! `$STATEGRAPH_TEST_CHROMEDRIVER`, else on `PATH` (`./install.sh
//! --deps-only` installs Debian's `chromium` and `chromium-driver`); without
//! them these tests fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
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

/// Headless, at the window's size, with profile `profile`, and off the
/// network: this machine's network is closed and Chromium would hang on
/// connections to Google's hosts.
fn chromium_flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-breakpad",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        format!("--user-data-dir={}", profile.display()),
    ])
    .collect()
}

/// Headless Chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=FILE`), after the page's script ran (virtual time: no
/// waiting on the clock). Flags that keep it off the network: this machine's
/// network is closed and it would hang on connections.
fn chromium_run(url: &str, action: &str, profile: &Path) -> Output {
    let mut child = Command::new(chromium())
        .args(chromium_flags(profile))
        .args(["--virtual-time-budget=10000", action, url])
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
    height: usize,
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
    let shot = decode_png(&std::fs::read(&file).expect("chromium wrote the screenshot"));
    assert_eq!(
        (shot.width, shot.height),
        (WINDOW.0 as usize, WINDOW.1 as usize),
        "the screenshot has the window's size"
    );
    shot
}

fn decode_png(bytes: &[u8]) -> Shot {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "an RGB screenshot: {:?}", info.color_type);
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Shot {
        width: info.width as usize,
        height: info.height as usize,
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
    let mut holder = awaiting_approval(
        &db,
        &wd,
        SMALL_GRAPH,
        &["apply", "-no-color", "-var", "gen=3"],
    );
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

/// chromedriver: `$STATEGRAPH_TEST_CHROMEDRIVER`, else `chromedriver` on
/// `PATH`.
fn chromedriver() -> PathBuf {
    if let Some(p) = std::env::var_os("STATEGRAPH_TEST_CHROMEDRIVER") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the click test needs chromedriver and none was found on PATH. Install it \
                 (`./install.sh --deps-only` installs Debian's chromium-driver package) or set \
                 STATEGRAPH_TEST_CHROMEDRIVER to its path."
            )
        })
}

/// Headless Chromium driven by chromedriver over WebDriver (W3C), to click
/// in the page as a user does. Both end when it is dropped.
struct Browser {
    driver: Child,
    authority: String,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        // A free port for chromedriver (it cannot report one it chose).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // In a process group of its own, which the Chromium it starts
        // joins: dropping the browser ends both even if the session's
        // DELETE never came through.
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver as {}: {e}",
                    chromedriver().display()
                )
            });
        let mut browser = Browser {
            driver,
            authority: format!("127.0.0.1:{port}"),
            session: None,
            _profile: tempfile::tempdir().unwrap(),
        };
        wait_until(
            "chromedriver never answered",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                assert!(
                    browser.driver.try_wait().unwrap().is_none(),
                    "chromedriver ended at once (is port {port} taken?)"
                );
                std::net::TcpStream::connect(&browser.authority).is_ok()
            },
        );
        let capabilities = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": chromium_flags(browser._profile.path()),
            },
        }}});
        let (status, _, body) = http(&browser.authority, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "chromedriver started no Chromium: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        browser.session = Some(v["value"]["sessionId"].as_str().unwrap().to_owned());
        browser
    }

    /// A command of the session; its `value`.
    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let session = self.session.as_deref().unwrap();
        let (status, _, answer) = http(
            &self.authority,
            method,
            &format!("/session/{session}{path}"),
            (!body.is_null()).then_some(&body),
        );
        assert_eq!(status, 200, "{method} {path}: {answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", serde_json::json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn eval(&self, script: &str, args: Value) -> Value {
        let args = if args.is_null() {
            serde_json::json!([])
        } else {
            args
        };
        self.command(
            "POST",
            "/execute/sync",
            serde_json::json!({ "script": script, "args": args }),
        )
    }

    /// A left click with the mouse at (`x`, `y`) of the window.
    fn click(&self, x: i64, y: i64) {
        self.command(
            "POST",
            "/actions",
            serde_json::json!({ "actions": [{
                "type": "pointer",
                "id": "mouse",
                "parameters": { "pointerType": "mouse" },
                "actions": [
                    { "type": "pointerMove", "duration": 0, "origin": "viewport", "x": x, "y": y },
                    { "type": "pointerDown", "button": 0 },
                    { "type": "pointerUp", "button": 0 },
                ],
            }]}),
        );
    }

    fn screenshot(&self) -> Shot {
        let b64 = self.command("GET", "/screenshot", Value::Null);
        decode_png(&base64_decode(b64.as_str().expect("a base64 screenshot")))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            let _ = std::panic::catch_unwind(|| {
                http(
                    &self.authority,
                    "DELETE",
                    &format!("/session/{session}"),
                    None,
                )
            });
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver's screenshots).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {}", c as char),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|q| {
            let n = q
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(q.len() - 1)
        })
        .collect()
}

#[test]
fn clicking_an_instance_in_the_graph_marks_its_cone_and_shows_its_history() {
    let db = test_db();
    let wd = store_small_graph(&db);
    let server = Server::start(&db, &wd);
    let browser = Browser::start();
    browser.open(&format!(
        "{}/?{}",
        server.url,
        query(&[("state", SMALL_GRAPH)])
    ));
    let text_of = |id: &str| {
        browser
            .eval(
                "return document.getElementById(arguments[0]).textContent",
                serde_json::json!([id]),
            )
            .as_str()
            .unwrap()
            .to_owned()
    };
    wait_until(
        "the page never finished loading",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || browser.eval("return document.body.dataset.ready", Value::Null) == "1",
    );
    assert_eq!(
        text_of("cone-summary"),
        "6 instances. Click a resource to see its change cone and history."
    );

    // Where the graph drew db: its box on the page plus the node's place
    // in it, as cytoscape.js reports it.
    let at = browser.eval(
        "const p = cy.getElementById(arguments[0]).renderedPosition(); \
         const r = document.getElementById('graph').getBoundingClientRect(); \
         return [Math.round(r.x + p.x), Math.round(r.y + p.y)];",
        serde_json::json!([DB]),
    );
    browser.click(at[0].as_i64().unwrap(), at[1].as_i64().unwrap());

    wait_until(
        "the click never showed db's history",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            browser.eval(
                "return document.querySelectorAll('#history [data-version]').length",
                Value::Null,
            ) == 2
        },
    );
    assert_eq!(
        text_of("cone-summary"),
        "Cone of terraform_data.db: 1 to write, 2 to read, of 6 instances."
    );
    assert_eq!(text_of("history-address"), DB);
    let search = browser.eval("return location.search", Value::Null);
    assert_eq!(
        search.as_str().unwrap(),
        format!("?{}", query(&[("state", SMALL_GRAPH), ("cone", DB)])),
        "the URL holds the cone (a link to it shows the same)"
    );

    // And the cone is drawn in its colours.
    let rect: Vec<usize> = browser
        .eval(
            "const r = document.getElementById('graph').getBoundingClientRect(); \
             return [r.x, r.y, r.width, r.height].map(Math.round);",
            Value::Null,
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap() as usize)
        .collect();
    let shot = browser.screenshot();
    assert!(
        rect[0] + rect[2] <= shot.width && rect[1] + rect[3] <= shot.height,
        "the graph {rect:?} is in the screenshot ({} x {})",
        shot.width,
        shot.height
    );
    let rect = [rect[0], rect[1], rect[2], rect[3]];
    let write = shot.count(rgb(stategraph::graph::render::WRITE_COLOUR), rect);
    let read = shot.count(rgb(stategraph::graph::render::READ_COLOUR), rect);
    assert!(
        write > 200,
        "write-set colour after the click: {write} pixels"
    );
    assert!(
        read > 2 * 200,
        "read-set colour after the click: {read} pixels"
    );
}

/// `GET path` on the server over plain HTTP/1.1: the status, the header
/// lines (names lowercased) and the body.
fn get(server: &Server, path: &str) -> (u16, String, String) {
    http(server.url.trim_start_matches("http://"), "GET", path, None)
}

/// One HTTP/1.1 request to `authority` (`host:port`), the connection closed
/// after it: the status, the header lines (names lowercased) and the body
/// (chunks joined).
fn http(authority: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(authority)
        .unwrap_or_else(|e| panic!("connect to {authority}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read up to the body's end (Content-Length, the last chunk, or the
    // connection's close): chromedriver keeps the connection open.
    let mut response = Vec::new();
    let mut buf = [0u8; 65536];
    let done = |r: &[u8]| -> bool {
        let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
        let body = &r[end + 4..];
        match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
            Some(n) => body.len() >= n.trim().parse::<usize>().unwrap(),
            None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
            None => false,
        }
    };
    while !done(&response) {
        let n = stream.read(&mut buf).expect("read the response");
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP response: {response}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let headers: String = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}:{value}\n", name.to_ascii_lowercase()),
            None => format!("{l}\n"),
        })
        .collect();
    let body = if headers.contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

/// A chunked body's chunks, joined.
fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
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

    // The page on a state that does not exist says so where each part
    // would be.
    let missing = dom(&format!("{}/?state=nope", server.url));
    let said = missing.matches("no state named \"nope\"").count();
    assert_eq!(said, 3, "graph, timeline and locks each say it:\n{missing}");

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
