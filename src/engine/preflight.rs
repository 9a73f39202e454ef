//! Terraform's own refusals that need no terraform run, made before the
//! database is opened: a directory with no configuration files, `-var`
//! values that are malformed or name a variable the root module does not
//! declare, required variables with no value. stategraph refuses them in
//! terraform's words and with its exit code (1) even when it would run no
//! terraform at all (a plan whose discovery finds nothing to change).
//! Where terraform would ask for a required variable (at a terminal, input
//! not turned off), stategraph asks, in terraform's words, once for all the
//! terraform commands of the run.
//!
//! Where the configuration cannot be read here (JSON configuration, a file
//! that does not parse, a missing `-var-file`), terraform's own run says
//! what is wrong.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context as _, Result};

use super::Kind;
use crate::settings::Settings;
use crate::terraform::config::{self, Inputs, VariablePrompt};
use crate::tfargs::TfFlags;

/// Refuses what terraform would refuse before planning; asks for the
/// required variables with no value where terraform would, and returns
/// the answers (name, value), to be given to every terraform command of
/// the run as `TF_VAR_` variables (not on a command line, where other
/// users could read them).
pub fn check(settings: &Settings, kind: Kind, flags: &TfFlags) -> Result<Vec<(String, String)>> {
    let root = &settings.workdir;
    if !flags.destroy && !config::has_configuration(root) {
        match kind {
            Kind::Plan => bail!(
                "No configuration files\n\n\
                 Plan requires configuration to be present. Planning without a configuration \
                 would mark everything for destruction, which is normally not what is desired. \
                 If you would like to destroy everything, run plan with the -destroy option. \
                 Otherwise, create a Terraform configuration file (.tf file) and try again."
            ),
            _ => bail!(
                "No configuration files\n\n\
                 Apply requires configuration to be present. Applying without a configuration \
                 would mark everything for destruction, which is normally not what is desired. \
                 If you would like to destroy everything, run 'stategraph destroy' instead."
            ),
        }
    }
    let mut assigned: Vec<&str> = Vec::new();
    for kv in flags.vars.iter().filter_map(|v| v.strip_prefix("-var=")) {
        match kv.split_once('=') {
            Some((name, _)) => assigned.push(name.trim()),
            None => bail!(
                "Invalid -var option\n\n\
                 The given -var option {kv:?} is not correctly specified. Must be a variable \
                 name and value separated by an equals sign, like -var=\"key=value\"."
            ),
        }
    }
    let inputs = Inputs {
        vars: flags.vars.clone(),
        env: settings.tf_vars.clone(),
        ..Inputs::default()
    };
    let Ok(variables) = config::root_variables(root, &inputs) else {
        return Ok(Vec::new());
    };
    if let Some(name) = assigned
        .iter()
        .find(|n| !variables.declared.contains_key(**n))
    {
        bail!(
            "Value for undeclared variable\n\n\
             A variable named {name:?} was assigned on the command line, but the root module \
             does not declare a variable of that name. To use this value, add a \"variable\" \
             block to the configuration."
        );
    }
    let unset: Vec<&String> = variables
        .declared
        .iter()
        .filter(|(name, has_default)| !**has_default && !variables.given.contains(*name))
        .map(|(name, _)| name)
        .collect();
    let can_ask = !flags.no_input && settings.tf_input && std::io::stdin().is_terminal();
    match unset.first() {
        None => Ok(Vec::new()),
        Some(name) if !can_ask => bail!(
            "No value for required variable\n\n\
             The root module input variable {name:?} is not set, and has no default value. Use \
             a -var or -var-file command line argument to provide a value for this variable."
        ),
        Some(_) => unset
            .into_iter()
            .map(|name| {
                let prompt = variables.prompts.get(name).cloned().unwrap_or_default();
                Ok((name.clone(), ask(name, &prompt)?))
            })
            .collect(),
    }
}

/// Asks for the value of variable `name` on stdout and reads it from the
/// terminal, as terraform does: its description, then `Enter a value:`;
/// a sensitive variable's value is typed unseen.
fn ask(name: &str, prompt: &VariablePrompt) -> Result<String> {
    let mut text = format!("var.{name}\n");
    if let Some(description) = prompt.description.as_deref().filter(|d| !d.is_empty()) {
        for line in description.lines() {
            text.push_str(&format!("  {line}\n"));
        }
        text.push('\n');
    }
    text.push_str("  Enter a value: ");
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    let unseen = prompt.sensitive.then(hide_typing);
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(unseen);
    if prompt.sensitive {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")?;
    out.flush()?;
    if read.context("cannot read the answer")? == 0 {
        bail!(
            "No value for required variable\n\n\
             The root module input variable {name:?} is not set, and has no default value. Use \
             a -var or -var-file command line argument to provide a value for this variable."
        );
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Turns the terminal's echo off until dropped, and back on should Ctrl-C
/// end the process meanwhile (the handler restores the terminal, then
/// dies of SIGINT as it would have).
fn hide_typing() -> Option<Unseen> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    let _ = SAVED.set(libc_termios(&saved));
    let handler = SigAction::new(
        SigHandler::Handler(restore_and_die),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    let previous = unsafe { sigaction(Signal::SIGINT, &handler) }.ok()?;
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).ok()?;
    Some(Unseen { saved, previous })
}

/// The terminal's settings before [`hide_typing`], for the signal handler.
static SAVED: std::sync::OnceLock<nix::libc::termios> = std::sync::OnceLock::new();

fn libc_termios(t: &nix::sys::termios::Termios) -> nix::libc::termios {
    t.clone().into()
}

extern "C" fn restore_and_die(_: nix::libc::c_int) {
    // SAFETY: tcsetattr, signal and raise are async-signal-safe.
    unsafe {
        if let Some(t) = SAVED.get() {
            nix::libc::tcsetattr(0, nix::libc::TCSANOW, t);
        }
        nix::libc::signal(nix::libc::SIGINT, nix::libc::SIG_DFL);
        nix::libc::raise(nix::libc::SIGINT);
    }
}

/// See [`hide_typing`].
struct Unseen {
    saved: nix::sys::termios::Termios,
    previous: nix::sys::signal::SigAction,
}

impl Drop for Unseen {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
        // SAFETY: restores the handler that was there before.
        let _ = unsafe {
            nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, &self.previous)
        };
    }
}
