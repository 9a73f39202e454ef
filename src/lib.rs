//! stategraph keeps terraform state in PostgreSQL as a graph: one row per
//! resource instance, the dependency edges as a table.
//!
//! The shape of the crate:
//! - `cli` parses raw flags; `settings` turns flags + environment into one
//!   validated [`settings::Settings`] (the only reader of the environment).
//! - `commands` has one thin file per subcommand: argv -> engine -> render.
//! - `engine` holds the stages of one plan/apply run, a file per stage, and
//!   the other paths that write a stored state (saved plans, commands on the
//!   whole state, recovery files); `engine::pipeline` reads like the flow.
//! - `tfargs` parses terraform's own command lines (pure); `checkout`
//!   reads the git repository a root module lives in.
//! - `terraform` is the only place that spawns terraform: version check,
//!   invocations, signals, the private run dir, plan and config reading.
//! - `graph` builds the petgraph of instances and computes change cones (pure).
//! - `tfstate` is the terraform state v4 model and its lossless round trip
//!   (and the attribute diffs of `history`);
//!   `address` parses and prints terraform addresses (both pure).
//! - `db` owns PostgreSQL: the pool, embedded migrations, the embedded
//!   cluster, state rows, locks and their lease fence, the transaction log,
//!   and the read-only side: `stategraph query`, instance history, `pull --at`.
//! - `ui` is the one place that prints; `error` maps failures to exit codes.

pub mod address;
pub mod checkout;
pub mod cli;
pub mod commands;
pub mod db;
pub mod engine;
pub mod error;
pub mod graph;
pub mod serve;
pub mod settings;
pub mod terraform;
pub mod tfargs;
pub mod tfstate;
pub mod ui;
