//! Terraform's own flags, as stategraph reads them: the one place that
//! parses a terraform command line (pure: no I/O).
//!
//! stategraph interprets the flags that change what it must lock and how
//! (`-target`, `-replace`, `-destroy`, `-refresh`, `-refresh-only`,
//! `-lock-timeout`, `-out`, ...) and passes every flag, interpreted or not,
//! on to terraform as the user wrote it, except the few it replaces with its
//! own (`-lock`, `-lock-timeout`) or refuses (`-state*`, `-backup`). Syntax
//! follows Go's flag package, as terraform's does: `-name=value`,
//! `-name value` for flags that take a value, `--name` as well as `-name`,
//! and the first argument that is not a flag ends the flags (a plan file for
//! `apply`, the addresses of `taint` or `state mv`).

use std::time::Duration;

/// Flags that take a value (`-name value` consumes the next argument).
const VALUE_FLAGS: &[&str] = &[
    "config",
    "provider",
    "target",
    "replace",
    "var",
    "var-file",
    "out",
    "parallelism",
    "lock-timeout",
    "state",
    "state-out",
    "backup",
    "generate-config-out",
];

/// Why the arguments could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("flag -{0} needs a value")]
    MissingValue(String),
    #[error("-lock-timeout={0} is not a duration (use e.g. 0s, 30s, 5m)")]
    BadDuration(String),
    #[error("-{flag}={value} is not true or false")]
    BadBool { flag: String, value: String },
    #[error("-{0} is not supported by stategraph: the state lives in PostgreSQL, not in a file")]
    StateFile(String),
    #[error("-lock=false is not supported: stategraph always locks the change cone (only the cone is locked, so others are rarely blocked)")]
    NoLock,
    #[error(
        "Failed to parse command-line flags\n\nflag provided but not defined: -{flag}{hint}\n\n\
         For more help on using this command, run:\n  stategraph {command} -help"
    )]
    Undefined {
        flag: String,
        command: String,
        hint: &'static str,
    },
}

/// Refuses a command line terraform's `command` (plan, apply or destroy)
/// would refuse: a flag it does not define (see [`undefined_flag`]).
pub fn check(command: &str, flags: &TfFlags) -> Result<(), FlagError> {
    match undefined_flag(command, flags) {
        None => Ok(()),
        Some(g) => Err(FlagError::Undefined {
            flag: g.name.clone(),
            command: command.to_owned(),
            hint: match g.name.as_str() {
                "chdir" => "\n\n-chdir goes before the command: stategraph -chdir=DIR COMMAND ...",
                _ => "",
            },
        }),
    }
}

/// The flags of one plan/apply/destroy run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TfFlags {
    pub targets: Vec<String>,
    pub replace: Vec<String>,
    pub destroy: bool,
    pub refresh: bool,
    pub refresh_only: bool,
    pub auto_approve: bool,
    pub lock_timeout: Duration,
    pub out: Option<String>,
    pub detailed_exitcode: bool,
    pub json: bool,
    pub no_color: bool,
    /// `-input=false` given (or `TF_INPUT=0`, decided by the caller).
    pub no_input: bool,
    /// `-var=...` / `-var-file=...` as given, for the discovery plan.
    pub vars: Vec<String>,
    /// `-parallelism=N`, if given.
    pub parallelism: Option<String>,
    /// `-allow-revert` (stategraph's own, not passed on): apply even where
    /// it reverts rows written from commits this checkout does not contain.
    pub allow_revert: bool,
    /// `-verify` (stategraph's own, not passed on): `plan` also runs
    /// terraform's plan of the whole configuration and checks that the plan
    /// of the cone equals it.
    pub verify: bool,
    /// Every flag to hand to terraform, in order, minus those stategraph
    /// replaces (`-lock`, `-lock-timeout`) or adds (`-allow-revert`); see
    /// [`TfFlags::pass`].
    pub passthrough: Vec<Given>,
    /// Positional arguments after the flags (a saved plan file for `apply`).
    pub positional: Vec<String>,
}

/// One flag as the user wrote it: one argument, or two (`-var a=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// Its name without dashes or value (`var`).
    pub name: String,
    /// The arguments as written.
    pub args: Vec<String>,
}

impl TfFlags {
    /// The flags to hand on, as written and in order, without those named
    /// in `except` (stategraph says them itself, or they mean nothing to
    /// the terraform command it runs).
    pub fn pass(&self, except: &[&str]) -> Vec<String> {
        self.passthrough
            .iter()
            .filter(|g| !except.contains(&g.name.as_str()))
            .flat_map(|g| g.args.iter().cloned())
            .collect()
    }

    /// Whether the boolean flag `name` (one stategraph does not interpret,
    /// e.g. `workspace select -or-create`) was given and not set false.
    pub fn is_set(&self, name: &str) -> bool {
        self.passthrough
            .iter()
            .rev()
            .find(|g| g.name == name)
            .is_some_and(|g| {
                let value = g.args[0].split_once('=').map(|(_, v)| v);
                parse_bool(name, value).unwrap_or(false)
            })
    }

    /// The flags `terraform apply PLANFILE` accepts (variables, targets and
    /// planning options were given to the plan).
    pub fn for_saved_plan(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.no_color {
            out.push("-no-color".to_owned());
        }
        if self.json {
            out.push("-json".to_owned());
        }
        if let Some(p) = &self.parallelism {
            out.push(format!("-parallelism={p}"));
        }
        out.push("-input=false".to_owned());
        out
    }
}

/// A Go boolean flag's value (`-flag`, `-flag=false`, `-flag=1`...).
pub fn parse_bool(flag: &str, value: Option<&str>) -> Result<bool, FlagError> {
    match value {
        None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") | Some("True") => {
            Ok(true)
        }
        Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") | Some("False") => {
            Ok(false)
        }
        Some(v) => Err(FlagError::BadBool {
            flag: flag.to_owned(),
            value: v.to_owned(),
        }),
    }
}

/// Go `time.ParseDuration` for the forms people use: `0`, `30s`, `5m`,
/// `1h30m`, `1.5s`, `250ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Whether the flag `-name` (or `--name`, with or without a value) is
/// among the flags of `args` (everything after the command name; flags end
/// at the first argument that is not one).
pub fn gives_flag(args: &[String], name: &str) -> bool {
    args.iter()
        .take_while(|a| a.starts_with('-') && a.as_str() != "--")
        .filter_map(|a| a.strip_prefix("--").or_else(|| a.strip_prefix('-')))
        .any(|body| body.split_once('=').map_or(body, |(n, _)| n) == name)
}

/// Reads terraform's plan/apply flags from `args` (everything after the
/// subcommand name).
pub fn parse(args: &[String]) -> Result<TfFlags, FlagError> {
    let mut f = TfFlags {
        refresh: true,
        ..TfFlags::default()
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            f.positional.extend(args[i..].iter().cloned());
            break;
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            f.positional.push(arg.clone());
            f.positional.extend(args[i..].iter().cloned());
            break;
        };
        if body.is_empty() {
            f.positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let mut value = inline.map(str::to_owned);
        let mut consumed_next = false;
        if VALUE_FLAGS.contains(&name) && value.is_none() {
            let Some(next) = args.get(i) else {
                return Err(FlagError::MissingValue(name.to_owned()));
            };
            value = Some(next.clone());
            i += 1;
            consumed_next = true;
        }
        let v = value.as_deref();
        let mut pass = true;
        match name {
            "target" => f.targets.push(v.unwrap_or_default().to_owned()),
            "replace" => f.replace.push(v.unwrap_or_default().to_owned()),
            "destroy" => f.destroy = parse_bool(name, v)?,
            "refresh" => f.refresh = parse_bool(name, v)?,
            "refresh-only" => f.refresh_only = parse_bool(name, v)?,
            "auto-approve" => f.auto_approve = parse_bool(name, v)?,
            "detailed-exitcode" => f.detailed_exitcode = parse_bool(name, v)?,
            "json" => f.json = parse_bool(name, v)?,
            "no-color" => f.no_color = parse_bool(name, v)?,
            "allow-revert" => {
                f.allow_revert = parse_bool(name, v)?;
                pass = false;
            }
            "verify" => {
                f.verify = parse_bool(name, v)?;
                pass = false;
            }
            "input" => f.no_input = !parse_bool(name, v)?,
            "out" => f.out = value.clone(),
            "var" | "var-file" => f.vars.push(format!("-{name}={}", v.unwrap_or_default())),
            "parallelism" => f.parallelism = value.clone(),
            "lock-timeout" => {
                let text = v.unwrap_or_default();
                f.lock_timeout =
                    parse_duration(text).ok_or_else(|| FlagError::BadDuration(text.to_owned()))?;
                pass = false;
            }
            "lock" => {
                if !parse_bool(name, v)? {
                    return Err(FlagError::NoLock);
                }
                pass = false;
            }
            "state" | "state-out" | "backup" => return Err(FlagError::StateFile(name.to_owned())),
            _ => {}
        }
        if pass {
            let mut args = vec![arg.clone()];
            if consumed_next {
                args.push(value.unwrap_or_default());
            }
            f.passthrough.push(Given {
                name: name.to_owned(),
                args,
            });
        }
    }
    Ok(f)
}

/// What stategraph does with a terraform command it does not run itself
/// (anything but init, plan, apply, destroy and `state push|pull|list|show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Never touches the state: run in the user's directory as it is.
    NoState,
    /// Only reads the state: run on a private copy of the stored state.
    ReadState,
    /// Writes the state: run on a private copy with the whole state locked,
    /// and merged back.
    WriteState,
    /// `workspace` (or `env`): workspaces are stored states.
    Workspace,
    /// No meaning here (legacy `push`): refused with what to do instead.
    Refused,
    /// Not a command stategraph knows.
    Unknown,
}

/// Commands that never touch the state.
pub const NO_STATE: &[&str] = &[
    "version", "fmt", "get", "login", "logout", "metadata", "test",
];

/// Commands that only read the state.
pub const READ_STATE: &[&str] = &[
    "output",
    "show",
    "validate",
    "console",
    "graph",
    "providers",
    "modules",
];

/// Commands that write the state.
pub const WRITE_STATE: &[&str] = &["import", "taint", "untaint", "refresh"];

/// `state` subcommands that write the state.
pub const WRITE_STATE_SUBCOMMANDS: &[&str] = &["mv", "rm", "replace-provider"];

/// What stategraph does with the terraform command `args` (`args[0]` is its name).
pub fn classify(args: &[String]) -> Class {
    let sub = args.get(1).map(String::as_str);
    match args.first().map(String::as_str).unwrap_or_default() {
        // `providers lock` and `providers mirror` read only the configuration.
        "providers" if matches!(sub, Some("lock" | "mirror")) => Class::NoState,
        c if READ_STATE.contains(&c) => Class::ReadState,
        c if NO_STATE.contains(&c) => Class::NoState,
        c if WRITE_STATE.contains(&c) => Class::WriteState,
        "workspace" | "env" => Class::Workspace,
        "push" => Class::Refused,
        _ => Class::Unknown,
    }
}

/// Flags `terraform plan`, `apply` and `destroy` all define (terraform 1.5
/// to 1.11, OpenTofu to 1.9).
const RUN_FLAGS: &[&str] = &[
    "destroy",
    "refresh-only",
    "refresh",
    "replace",
    "target",
    "var",
    "var-file",
    "compact-warnings",
    "input",
    "lock",
    "lock-timeout",
    "no-color",
    "parallelism",
    "state",
    "json",
    "allow-deferral",
    // OpenTofu's
    "exclude",
    "concise",
    "show-sensitive",
    "consolidate-warnings",
    "consolidate-errors",
    "deprecation",
];

/// Flags of `terraform plan` only.
const PLAN_FLAGS: &[&str] = &["out", "detailed-exitcode", "generate-config-out"];

/// Flags of `terraform apply` and `destroy` only (and stategraph's own
/// `-allow-revert`).
const APPLY_FLAGS: &[&str] = &["auto-approve", "backup", "state-out", "allow-revert"];

/// The first flag of `flags` that terraform's `command` (plan, apply or
/// destroy) does not define: terraform would refuse the command line, and
/// so does stategraph, even when it would run no terraform.
pub fn undefined_flag<'f>(command: &str, flags: &'f TfFlags) -> Option<&'f Given> {
    let own = match command {
        "plan" => PLAN_FLAGS,
        _ => APPLY_FLAGS,
    };
    flags
        .passthrough
        .iter()
        .find(|g| !RUN_FLAGS.contains(&g.name.as_str()) && !own.contains(&g.name.as_str()))
}

/// The error for stategraph's own flags of plan and apply given to another
/// command (`taint -verify`): terraform would not know them there either.
pub fn misplaced_own_flag(command: &str, flags: &TfFlags) -> Option<String> {
    let (flag, home) = if flags.verify {
        ("-verify", "plan")
    } else if flags.allow_revert {
        ("-allow-revert", "apply")
    } else {
        return None;
    };
    Some(format!(
        "{flag} is a flag of `stategraph {home}`, not of `{command}`: drop it here"
    ))
}

/// Whether terraform's arguments ask for help (`-h`, `-help`, `--help`).
pub fn asks_for_help(args: &[String]) -> bool {
    args.iter()
        .any(|a| matches!(a.as_str(), "-h" | "-help" | "--help"))
}

/// `args` as the transaction log and lock holders may show them: the
/// value of every `-var` replaced by `<redacted>` (`-var=token=<redacted>`,
/// `-var token=<redacted>`), since a variable may be sensitive and the
/// log is read by everyone who can read the state's history. `-var-file`
/// paths and every other argument stay as written.
pub fn redact_vars(args: &[String]) -> Vec<String> {
    const REDACTED: &str = "<redacted>";
    let redact = |value: &str| match value.split_once('=') {
        Some((name, _)) => format!("{name}={REDACTED}"),
        None => REDACTED.to_owned(),
    };
    let mut out = Vec::with_capacity(args.len());
    let mut next_is_value = false;
    for arg in args {
        if std::mem::take(&mut next_is_value) {
            out.push(redact(arg));
            continue;
        }
        let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        match body.map(|b| b.split_once('=').unwrap_or((b, ""))) {
            Some(("var", _)) if !arg.contains('=') => {
                next_is_value = true;
                out.push(arg.clone());
            }
            Some(("var", _)) => {
                let (flag, value) = arg.split_once('=').expect("checked above");
                out.push(format!("{flag}={}", redact(value)));
            }
            _ => out.push(arg.clone()),
        }
    }
    out
}

/// Undoes [`crate::cli::normalize_args`] for terraform's flags (`--json` ->
/// `-json`) up to `--`, so that terraform sees and messages show what the
/// user wrote.
pub fn terraform_style(args: &[String]) -> Vec<String> {
    let mut positional = false;
    args.iter()
        .map(|a| {
            if positional || a == "--" {
                positional = true;
                return a.clone();
            }
            match a.strip_prefix("--") {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                    format!("-{rest}")
                }
                _ => a.clone(),
            }
        })
        .collect()
}

/// `init` flags that configure a backend.
const BACKEND_FLAGS: &[&str] = &[
    "backend-config",
    "reconfigure",
    "migrate-state",
    "force-copy",
];

/// `init`'s arguments split into its `-backend-config` flags (with their
/// values, in either syntax) and the rest, minus the other backend flags
/// (`-migrate-state`, `-reconfigure`, `-force-copy`, `-backend`), which
/// mean nothing for a migration into stategraph.
pub fn split_backend_flags(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut config, mut rest) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            rest.extend(args[i - 1..].iter().cloned());
            break;
        }
        let Some(found) = backend_flag(std::slice::from_ref(a)) else {
            rest.push(a.clone());
            continue;
        };
        let name = found.trim_start_matches('-');
        if name == "backend-config" {
            config.push(a.clone());
            if let Some(value) = args.get(i) {
                config.push(value.clone());
                i += 1;
            }
        } else if name.starts_with("backend-config=") {
            config.push(a.clone());
        }
    }
    (config, rest)
}

/// The first flag of `init` that configures a backend (before `--`), as given.
pub fn backend_flag(args: &[String]) -> Option<&str> {
    for a in args.iter().take_while(|a| *a != "--") {
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let refused = BACKEND_FLAGS.contains(&name)
            // -backend=false is what we run anyway; -cloud is its alias.
            || (matches!(name, "backend" | "cloud") && value != Some("false"));
        if refused {
            return Some(a);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> TfFlags {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn both_value_syntaxes_and_double_dashes() {
        let f = p(&[
            "-target=aws_vpc.a",
            "--target",
            "module.m[\"k\"].x.y",
            "-var",
            "a=1",
            "-var-file=x.tfvars",
        ]);
        assert_eq!(f.targets, ["aws_vpc.a", "module.m[\"k\"].x.y"]);
        assert_eq!(
            f.pass(&[]),
            [
                "-target=aws_vpc.a",
                "--target",
                "module.m[\"k\"].x.y",
                "-var",
                "a=1",
                "-var-file=x.tfvars"
            ]
        );
    }

    #[test]
    fn booleans_and_the_flags_we_replace() {
        let f = p(&[
            "-auto-approve",
            "-refresh=false",
            "-lock-timeout=1m30s",
            "-input=false",
            "-lock=true",
        ]);
        assert!(f.auto_approve && !f.refresh && f.no_input);
        assert_eq!(f.lock_timeout, Duration::from_secs(90));
        assert_eq!(
            f.pass(&[]),
            ["-auto-approve", "-refresh=false", "-input=false"]
        );
        assert_eq!(
            f.pass(&["auto-approve"]),
            ["-refresh=false", "-input=false"]
        );
        assert_eq!(parse(&["-lock=false".into()]), Err(FlagError::NoLock));
        assert!(matches!(
            parse(&["-state=x".into()]),
            Err(FlagError::StateFile(_))
        ));
        assert!(matches!(
            parse(&["-lock-timeout=soon".into()]),
            Err(FlagError::BadDuration(_))
        ));
        assert!(matches!(
            parse(&["-out".into()]),
            Err(FlagError::MissingValue(_))
        ));
    }

    #[test]
    fn booleans_we_do_not_interpret_can_be_asked_for() {
        assert!(p(&["-or-create", "staging"]).is_set("or-create"));
        assert!(p(&["-or-create=true", "staging"]).is_set("or-create"));
        assert!(!p(&["-or-create=false", "staging"]).is_set("or-create"));
        assert!(!p(&["staging"]).is_set("or-create"));
    }

    #[test]
    fn first_positional_ends_the_flags() {
        let f = p(&["-auto-approve", "saved.tfplan", "-extra"]);
        assert_eq!(f.positional, ["saved.tfplan", "-extra"]);
    }

    #[test]
    fn lock_timeout_in_either_syntax_is_ours() {
        for args in [
            &["-lock-timeout=5m", "terraform_data.a"][..],
            &["-lock-timeout", "5m", "terraform_data.a"][..],
        ] {
            let f = p(args);
            assert_eq!(f.lock_timeout, Duration::from_secs(300), "{args:?}");
            assert!(f.pass(&[]).is_empty(), "{args:?}");
            assert_eq!(f.positional, ["terraform_data.a"]);
        }
    }

    #[test]
    fn backend_flags_are_found_in_either_spelling() {
        let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let found = |args: &[&str]| backend_flag(&strings(args)).map(str::to_owned);
        assert_eq!(found(&["-upgrade"]), None);
        assert_eq!(found(&["-backend=false"]), None);
        assert_eq!(found(&["-reconfigure"]).as_deref(), Some("-reconfigure"));
        assert_eq!(
            found(&["-upgrade", "--backend-config=bucket=x"]).as_deref(),
            Some("--backend-config=bucket=x")
        );
        assert_eq!(found(&["-backend=true"]).as_deref(), Some("-backend=true"));
        assert_eq!(found(&["-cloud"]).as_deref(), Some("-cloud"));
        assert_eq!(found(&["--", "-reconfigure"]), None);
    }

    #[test]
    fn backend_config_flags_are_taken_with_their_values() {
        let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (config, rest) = split_backend_flags(&strings(&[
            "-upgrade",
            "-migrate-state",
            "-backend-config=bucket=x",
            "-backend-config",
            "key=y",
            "-force-copy",
            "-no-color",
        ]));
        assert_eq!(
            config,
            ["-backend-config=bucket=x", "-backend-config", "key=y"]
        );
        assert_eq!(rest, ["-upgrade", "-no-color"]);
    }

    #[test]
    fn flags_are_written_back_terraform_style() {
        let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            terraform_style(&strings(&["output", "--json", "x", "--", "--raw"])),
            ["output", "-json", "x", "--", "--raw"]
        );
    }

    #[test]
    fn flags_terraform_does_not_define_are_found() {
        let name = |command: &str, args: &[&str]| {
            undefined_flag(command, &p(args)).map(|g| g.args[0].clone())
        };
        assert_eq!(name("plan", &["-var", "a=1", "-out=x", "-json"]), None);
        assert_eq!(name("apply", &["-auto-approve", "-target=a.b"]), None);
        assert_eq!(name("plan", &["-chdir=x"]).as_deref(), Some("-chdir=x"));
        assert_eq!(
            name("plan", &["-auto-approve"]).as_deref(),
            Some("-auto-approve")
        );
        assert_eq!(name("apply", &["-out=x"]).as_deref(), Some("-out=x"));
        assert_eq!(
            name("destroy", &["-var-fle=x"]).as_deref(),
            Some("-var-fle=x")
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn redact_vars_hides_every_value_and_keeps_var_files() {
        let args: Vec<String> = [
            "-var",
            "secret=hunter2",
            "-var=token=abc=def",
            "--var=x=1",
            "-var-file=prod.tfvars",
            "-target=a.b",
            "-var",
            "noequals",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            redact_vars(&args),
            [
                "-var",
                "secret=<redacted>",
                "-var=token=<redacted>",
                "--var=x=<redacted>",
                "-var-file=prod.tfvars",
                "-target=a.b",
                "-var",
                "<redacted>",
            ]
        );
    }
}
