//! Terraform's own flags for plan/apply/destroy, as stategraph reads them
//! (pure: no I/O).
//!
//! stategraph interprets the flags that change what it must lock and how
//! (`-target`, `-replace`, `-destroy`, `-refresh`, `-refresh-only`,
//! `-lock-timeout`, `-out`, ...) and passes every flag, interpreted or not,
//! on to terraform as the user wrote it, except the few it replaces with its
//! own (`-lock`, `-lock-timeout`, `-state*`, `-backup`). Syntax follows Go's
//! flag package, as terraform's does: `-name=value`, `-name value` for
//! flags that take a value, `--name` as well as `-name`, and the first
//! argument that is not a flag ends the flags (a plan file for `apply`).

use std::time::Duration;

/// Flags that take a value (`-name value` consumes the next argument).
const VALUE_FLAGS: &[&str] = &[
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
    /// Every flag to hand to terraform, in order, minus those stategraph
    /// replaces (`-lock`, `-lock-timeout`).
    pub passthrough: Vec<String>,
    /// Positional arguments after the flags (a saved plan file for `apply`).
    pub positional: Vec<String>,
}

fn parse_bool(flag: &str, value: Option<&str>) -> Result<bool, FlagError> {
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
            f.passthrough.push(arg.clone());
            if consumed_next {
                f.passthrough.push(value.unwrap_or_default());
            }
        }
    }
    Ok(f)
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
            f.passthrough,
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
            f.passthrough,
            ["-auto-approve", "-refresh=false", "-input=false"]
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
    fn first_positional_ends_the_flags() {
        let f = p(&["-auto-approve", "saved.tfplan", "-extra"]);
        assert_eq!(f.positional, ["saved.tfplan", "-extra"]);
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
}
