//! Child processes of the tests and waiting on them.
//!
//! Owns: starting a command with its output captured or discarded, finding
//! a process's children, signalling them, and polling a condition against
//! a deadline. Every test of the binary shares this process, so nothing here
//! acts on processes by name or sends a signal to the test process itself:
//! only to the pids a test started or found under them.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// Starts `cmd` with stdout and stderr piped (read them with
/// `wait_with_output`).
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Starts `cmd` with its output discarded: for a run the test kills, whose
/// output nobody reads (a pipe nobody reads could fill up and stall it).
pub fn spawn_quiet(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// What a finished child started by [`spawn_piped`] printed, for a panic
/// message (empty for a quiet one).
pub fn leftover_output(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// Panics with `what` (and the child's output) when `child` has ended.
#[track_caller]
pub fn assert_running(child: &mut Child, what: &str) {
    if let Some(status) = child.try_wait().expect("polling a child") {
        panic!("{what} ({status}):\n{}", leftover_output(child));
    }
}

/// The direct children of `pid` (`pgrep -P`).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep is needed by this test (procps)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().expect("pgrep prints pids"))
        .collect()
}

/// Every descendant of `pid` (children, their children, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in child_pids(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// Whether process `pid` exists (a zombie counts: it is not reaped yet).
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `sig` to `pid`; panics if it cannot be sent.
#[track_caller]
pub fn send_signal(pid: u32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
        .unwrap_or_else(|e| panic!("cannot send {sig} to {pid}: {e}"));
}

/// Calls `f` every `every` until it returns `Some`, and returns that;
/// panics with `what` once `timeout` has passed. `f` may itself panic to
/// give up early (say, when the process it waits on has ended).
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = f() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} (waited {timeout:?})");
        std::thread::sleep(every);
    }
}

/// [`wait_for`] a condition.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) {
    wait_for(what, timeout, every, || done().then_some(()));
}

/// Polls `done` every `every` for at most `timeout`; whether it came true.
/// For tests that look at the outcome themselves.
pub fn poll_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Waits until none of `pids` exists; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until_gone(pids: &[u32], timeout: Duration, what: &str) {
    wait_until(what, timeout, Duration::from_millis(100), || {
        !pids.iter().any(|p| exists(*p))
    });
}
