//! stategraph's integration tests, as one test binary (`it`): the real
//! `stategraph` binary and library against a real PostgreSQL (an ephemeral
//! cluster per test process, a fresh database per test), the real terraform
//! on the configurations of `fixtures/tf/`, and the aws provider against a
//! local moto server. `common` holds the harness every module shares.
//!
//! One binary instead of one per file: the crate and the harness are linked
//! once, and every module's tests share the test threads. Each module below
//! owns one area and says what in its own `//!` paragraph.
//!
//! ```sh
//! cargo test --test it                     # every integration test
//! cargo test --test it locks::             # the tests of one module
//! cargo test --test it locks::release_frees_at_once -- --exact
//! ```

mod common;

mod adoption;
mod apply;
mod bad_input;
mod checkpoints;
mod ci_guide;
mod ci_output;
mod concurrency;
mod cone;
mod connections;
mod corpus;
mod corpus_aws;
mod db_outage;
mod deps;
mod discovery;
mod embedded;
mod help;
mod history;
mod lease;
mod lock_queue;
mod locks;
mod locks_cli;
mod log;
mod merge;
mod migrations;
mod outputs;
mod parity;
mod passthrough;
mod properties;
mod providers;
mod query;
mod revert;
mod saved_plan;
mod scoped_refresh;
mod secrets;
mod serve;
mod signals;
mod snapshot_plans;
mod state_name;
mod state_roundtrip;
mod stress;
mod terraform_runner;
mod time_travel;
mod tls;
mod verify;
mod web;
