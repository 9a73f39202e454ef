//! The `stategraph` binary: parse arguments, build the runtime, run the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    use stategraph::terraform::rundir::{watch_override, WATCH_ARG};
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The watcher of an override file a run started (not a user command).
    if let [_, arg, root, lock] = raw.as_slice() {
        if arg == WATCH_ARG {
            watch_override(root.as_ref(), lock.as_ref());
            return ExitCode::SUCCESS;
        }
    }
    let args = stategraph::cli::normalize_args(raw.clone());
    let cli = match stategraph::cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // Help and version are answers (exit 0); a usage error exits 1, as
        // terraform's do (2 means "changes present" to -detailed-exitcode).
        Err(e) if e.use_stderr() => {
            // Flags as the user wrote them (-bogus), not as clap read them (--bogus).
            let text = stategraph::cli::as_written(&e.to_string(), &raw, &args);
            stategraph::ui::error(text.trim_end());
            return ExitCode::from(1);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            stategraph::ui::error(&format!("Error: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(stategraph::commands::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => stategraph::error::report(&e),
    }
}
