//! stategraph keeps terraform state in PostgreSQL as a graph: one row per
//! resource instance, the dependency edges as a table.
//!
//! The shape of the crate:
//! - `cli` parses raw flags; `settings` turns flags + environment into one
//!   validated [`settings::Settings`] (nothing else reads the environment).
//! - `commands` has one file per subcommand, all `async fn run(&Settings, args)`.
//! - `tfstate` is the terraform state v4 model and its lossless round trip (pure).
//! - `address` parses and prints terraform addresses (pure).
//! - `graph` builds the petgraph of instances and computes change cones (pure).
//! - `db` owns PostgreSQL: the pool, embedded migrations, the embedded
//!   cluster, state rows, the transaction log.
//! - `ui` is the one place that writes progress and messages to stderr.
//! - `error` maps failures to exit codes and hints.

pub mod address;
pub mod cli;
pub mod commands;
pub mod db;
pub mod error;
pub mod graph;
pub mod settings;
pub mod terraform;
pub mod tfargs;
pub mod tfstate;
pub mod ui;
