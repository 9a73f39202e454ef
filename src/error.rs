//! The one place that turns a failure into what the user sees and an exit code.
//!
//! Commands return `anyhow::Error` with `.context("what we were doing")`;
//! this module prints it terraform-style (`Error: ...`, then the causes and
//! what to do next) and picks the exit code. A command that must exit with a
//! specific code (terraform's own, passed through) returns [`Exit`].

use std::process::ExitCode;

/// Exit with this code without printing anything more (the message, if any,
/// was already shown, e.g. by terraform itself).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct Exit(pub u8);

impl Exit {
    /// `Ok` for 0, else this exit code: terraform's exit code is ours.
    pub fn with(code: u8) -> anyhow::Result<()> {
        match code {
            0 => Ok(()),
            code => Err(Exit(code).into()),
        }
    }
}

/// Prints `err` to stderr and returns the exit code for it.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(Exit(code)) = err.downcast_ref::<Exit>() {
        return ExitCode::from(*code);
    }
    crate::ui::error(&render(err));
    ExitCode::from(1)
}

/// `Error: <outermost context>` followed by the causes, innermost last,
/// each on its own paragraph.
pub fn render(err: &anyhow::Error) -> String {
    let mut chain = err.chain().map(|e| e.to_string());
    let mut last = chain.next().unwrap_or_default();
    let mut out = format!("Error: {last}");
    for cause in chain {
        // Skip causes that merely repeat the previous one (common with wrapped library errors).
        if last.contains(&cause) {
            continue;
        }
        out.push_str("\n\n");
        out.push_str(&cause);
        last = cause;
    }
    if lacks_privilege(err) {
        out.push_str(
            "\n\nThe database user lacks a privilege this command needs. The README's \
\"Database privileges\" says which command needs which; sql/roles.sql creates a reader, \
a planner and an applier role.",
        );
    }
    out
}

/// Whether PostgreSQL refused a statement for want of a privilege (SQLSTATE 42501).
fn lacks_privilege(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|c| *c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot run x: {source}")]
        struct Spawn {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Spawn {
            source: std::io::Error::other("no such file"),
        });
        assert_eq!(render(&e), "Error: cannot run x: no such file");
    }

    #[test]
    fn renders_context_then_cause() {
        let e: anyhow::Result<()> = Err(anyhow!("disk full")).context("cannot push state \"x\"");
        assert_eq!(
            render(&e.unwrap_err()),
            "Error: cannot push state \"x\"\n\ndisk full"
        );
    }
}
