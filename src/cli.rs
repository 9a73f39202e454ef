//! Raw command-line flags (clap definitions only).
//!
//! Nothing here reads the environment except through clap's `env` attributes,
//! and nothing validates beyond syntax: [`crate::settings`] turns these raw
//! flags into one validated `Settings`. Terraform spells long flags with one
//! dash (`-force`, `-chdir=DIR`); [`normalize_args`] rewrites them to clap's
//! two-dash form first, the way Go's flag package accepts both.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Terraform state in PostgreSQL as a graph: plan and apply lock and refresh
/// only what a change touches.
#[derive(Debug, Parser)]
#[command(
    name = "stategraph",
    // Usage lines say `stategraph`, whatever the binary is called or run as.
    bin_name = "stategraph",
    version,
    about,
    long_about = "stategraph keeps terraform state in PostgreSQL, one row per resource \
instance, with the dependency graph as data.\n\n\
With no database configured it starts (once) a private PostgreSQL cluster under \
your data directory and reuses it; point every CI runner at one shared PostgreSQL \
with --database-url or STATEGRAPH_DATABASE_URL (or the libpq PG* variables).\n\n\
Flags may be written terraform-style with one dash (-force) or with two (--force).",
    after_help = "Terraform's other commands (terraform's flags, output and exit codes):\n  \
output, show, validate, console, graph,     on a private copy of the stored state\n  \
providers, modules\n  \
taint, untaint, import, refresh,            on a private copy, with the whole state locked;\n  \
state mv, state rm, state replace-provider  the result is stored in one transaction\n  \
workspace show|list|select|new|delete       workspaces are stored states (PATH:NAME)\n  \
version, fmt, get, test, metadata,          as they are (they need no state)\n  \
login, logout\n\n\
Examples:\n  \
stategraph init                             providers and modules (never a backend)\n  \
stategraph plan -var-file=prod.tfvars       plan only the change cone\n  \
stategraph apply -lock-timeout=5m           apply it; unrelated applies run at the same time\n  \
stategraph output -json                     terraform's output, from the stored state\n  \
stategraph init -migrate-state              bring this configuration's terraform state in\n  \
stategraph cone aws_vpc.main                what a change to aws_vpc.main touches\n  \
stategraph query 'SELECT * FROM instances'  SQL over the stored states (read-only)\n  \
stategraph history aws_vpc.main             every version of an instance, with diffs\n  \
stategraph state pull > backup.tfstate      export the state again, losslessly\n\n\
`stategraph COMMAND -help` describes a command."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PostgreSQL connection URL (postgres://user@host:port/db?sslmode=require)
    /// or libpq key=value string; the PG* variables fill what it leaves out.
    /// Without it, the PG* variables are used if PGHOST, PGHOSTADDR or
    /// PGDATABASE is set, else the embedded cluster.
    #[arg(
        long,
        global = true,
        env = "STATEGRAPH_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Name of the stored state. Default: the repository's origin remote and
    /// the root module's path in it (github.com/acme/infra//envs/prod; the
    /// path alone without a remote, the absolute path outside git), plus
    /// ":WORKSPACE" for a workspace other than "default".
    #[arg(long, global = true, env = "STATEGRAPH_STATE", hide_env_values = true)]
    pub state: Option<String>,

    /// Switch to DIR before doing anything else, as terraform's -chdir does.
    #[arg(long, global = true, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// How long a lock lives without renewal (default 60s; STATEGRAPH_LOCK_LEASE).
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_lease: Option<String>,

    /// Record this checkout as where the state comes from. A state remembers
    /// the repository (its origin remote) and path it was created from, and
    /// a plan or apply from another checkout is refused; after the repository
    /// or the root module moved, one run with --adopt-state accepts the move.
    #[arg(long, global = true)]
    pub adopt_state: bool,

    /// Plain output: no colours, no spinners (implied when stderr is not a
    /// terminal or CI is set).
    #[arg(long = "no-color", global = true)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan only the change cone, as `terraform plan` (same flags, output, exit codes).
    ///
    /// Discovery first finds what may change without planning everything:
    /// each resource block of the configuration (its text and the variables,
    /// locals and module outputs it reads) is compared with the baseline
    /// stored when it was last planned or applied. Unchanged blocks are not
    /// planned; edited, added and removed blocks are; for blocks that read a
    /// changed value (a variable, a data source, timestamp()) or a module
    /// call whose count/for_each changed, terraform's refresh-less plan of
    /// those blocks or that call only says which instances change. Where the
    /// configuration cannot be compared (no baseline yet, override files,
    /// -target, -replace, -destroy, -refresh-only), terraform's refresh-less
    /// plan of the whole configuration decides; the step line says why.
    ///
    /// Then terraform plans the change cone (the changed instances and
    /// everything downstream) with -target on a private copy of the state
    /// read as a snapshot (a plan takes no locks): only the cone and what it
    /// reads are refreshed, or only the written instances beside a
    /// refresh-less plan where that is estimated faster
    /// (STATEGRAPH_SCOPED_REFRESH=auto, the default; always; never). Each
    /// provider with one configuration is started once for the plan, by
    /// stategraph, where terraform would start it three times
    /// (STATEGRAPH_SHARED_PROVIDERS=0: terraform starts its own). -out=FILE
    /// writes a saved plan that `stategraph apply FILE` applies if nothing it
    /// read changed since.
    ///
    /// -verify (stategraph's own) also runs terraform's refresh-less plan of
    /// the whole configuration and checks that the plan of the cone equals
    /// it, naming each difference and exiting 1 if not;
    /// STATEGRAPH_VERIFY=0.05 verifies that share of plans.
    ///
    /// Flags after `plan` are terraform's; stategraph's own (--state,
    /// --database-url, -chdir) go before it.
    #[command(
        disable_help_flag = true,
        override_usage = "stategraph [OPTIONS] plan [TERRAFORM FLAGS]..."
    )]
    Plan(TerraformArgs),

    /// Apply only the change cone, as `terraform apply`.
    ///
    /// Discovery and the cone as for plan, with exclusive locks on what is
    /// written and shared locks on what it reads; the result is merged into
    /// PostgreSQL row by row, so applies of unrelated resources of one state
    /// run at the same time, and overlapping ones wait (-lock-timeout) or
    /// fail at once naming the holder. `stategraph apply FILE` applies a
    /// saved plan. -allow-revert (stategraph's own) applies even where rows
    /// were last written from a commit this checkout does not contain.
    #[command(
        disable_help_flag = true,
        override_usage = "stategraph [OPTIONS] apply [TERRAFORM FLAGS]... [PLANFILE]"
    )]
    Apply(TerraformArgs),

    /// Destroy, as `terraform destroy` (an apply with -destroy).
    #[command(
        disable_help_flag = true,
        override_usage = "stategraph [OPTIONS] destroy [TERRAFORM FLAGS]..."
    )]
    Destroy(TerraformArgs),

    /// Read and write the stored state with terraform's state commands.
    #[command(
        subcommand,
        after_help = "Also terraform's `state mv`, `state rm` and `state replace-provider`: \
they run on a private copy of the stored state with the whole state locked, and the \
result is stored in one transaction."
    )]
    State(StateCommand),

    /// Show the change cone of addresses: what a change to them writes and reads.
    ///
    /// The write set is the given instances and every instance downstream of
    /// them; the read set is every ancestor of the write set that is not in it.
    /// A resource address names all its instances; a module address all
    /// instances inside it.
    Cone(ConeArgs),

    /// Draw the stored dependency graph, or the change cone of addresses in it.
    ///
    /// With no ADDR: every instance of the state and its dependencies. With
    /// ADDRs: their change cone (as `stategraph cone` computes it), the write
    /// set and the read set marked. As text, Graphviz dot (`| dot -Tsvg`),
    /// Mermaid (paste into Markdown) or JSON. (`stategraph graph` is
    /// terraform's own: it draws the configuration.)
    #[command(after_help = "Examples:\n  \
stategraph deps --format dot | dot -Tsvg > graph.svg\n  \
stategraph deps --format mermaid 'module.app[\"web\"]'")]
    Deps(DepsArgs),

    /// Show the transaction log: who wrote what to the state, and when.
    Log(LogArgs),

    /// Run read-only SQL over the stored states (the stategraph_api views).
    ///
    /// The views: states, instances (one row per instance object: address,
    /// type, module, provider, attributes, ...), dependencies (one row per
    /// edge), outputs, transactions and history (every version of every
    /// instance); unqualified names find them first. The statement runs in a
    /// READ ONLY transaction with a statement timeout; a statement that
    /// writes is refused. Sensitive values (the paths an instance lists in
    /// sensitive_attributes, sensitive outputs) read "(sensitive value)"
    /// unless --show-sensitive. Prints an aligned table, or --json (an array
    /// of objects) or --csv.
    #[command(after_help = "Examples:\n  \
stategraph query 'SELECT module, count(*) FROM instances GROUP BY module'\n  \
stategraph query --json 'SELECT * FROM history WHERE written_by = 42'")]
    Query(QueryArgs),

    /// Show every version of one instance: when, who, which transaction, what changed.
    ///
    /// Each version the state has held, oldest first, with the transaction
    /// that wrote it (its command, user and time) and its attribute changes
    /// against the version before; sensitive values read "(sensitive value)".
    History(HistoryArgs),

    /// List the subgraph locks held now: who, which command, since when, until when.
    Locks(LocksArgs),

    /// Serve the stored states over HTTP: terraform's http backend and a read-only page.
    ///
    /// Each state is at /state/NAME (NAME as --state takes it, slashes
    /// included); point terraform's `backend "http"` at it with
    /// lock_address and unlock_address set to the same URL (methods LOCK
    /// and UNLOCK, terraform's defaults). A LOCK locks every row of the state
    /// in the tables stategraph's own runs use, so terraform and stategraph
    /// exclude each other; a POST is merged row by row, as `state push`.
    ///
    /// --tokens FILE (STATEGRAPH_SERVE_TOKENS) is a JSON array of entries:
    ///
    ///   [{"name": "ci", "token": "SECRET", "scope": "envs/*", "access": "read-write"},
    ///    {"name": "dash", "username": "dash", "password": "SECRET", "scope": "*", "access": "read-only"}]
    ///
    /// name: recorded as who wrote. token: sent as `Authorization: Bearer
    /// TOKEN`, or as basic auth's password with any user name (terraform's
    /// `password`); or username and password: basic auth. scope: a state
    /// name, a prefix ending in *, or * (every state; the page needs it).
    /// access: read-write, or read-only (GET: terraform_remote_state, the
    /// page). Without --tokens, nobody is asked for credentials, and the
    /// server listens only on a loopback address unless
    /// --allow-unauthenticated says otherwise.
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),

    /// Free a lock held by a run that is gone, as terraform's force-unlock does.
    ///
    /// LOCK_ID is the ID that `stategraph locks` and lock errors show. A run
    /// that died frees its locks by itself when its lease expires; this frees
    /// them at once. Only use it when the holder is really gone.
    #[command(name = "force-unlock")]
    ForceUnlock(ForceUnlockArgs),

    /// Write the result of a run that could not reach the database, from its recovery file.
    ///
    /// When a run cannot write terraform's result to PostgreSQL (the database
    /// stayed unreachable, its lock was lost), it keeps that result in a
    /// private recovery file and prints this command. `recover` frees the
    /// dead run's locks, takes them again, and writes the file's write set if
    /// nobody changed those resources since; otherwise it refuses, names
    /// what changed and keeps the file. The file is removed once written.
    Recover(RecoverArgs),

    /// Manage the embedded PostgreSQL cluster used when no database is configured.
    #[command(subcommand)]
    Db(DbCommand),

    /// Install providers and modules, as `terraform init -backend=false`.
    ///
    /// Writes `.terraform/modules`, `.terraform/providers` and
    /// `.terraform.lock.hcl` as terraform does, but configures no backend:
    /// the state lives in PostgreSQL. Flags after `init` are terraform's.
    /// With -migrate-state, the configuration's existing state (a local
    /// terraform.tfstate, a backend "local" path, or any other backend, read
    /// through terraform with the -backend-config flags given) is stored in
    /// PostgreSQL with its lineage and serial. Other backend flags
    /// (-reconfigure, -force-copy, -backend-config alone) are refused.
    #[command(
        disable_help_flag = true,
        override_usage = "stategraph [OPTIONS] init [TERRAFORM FLAGS]..."
    )]
    Init(TerraformArgs),

    /// Any other terraform command: read-only commands (output, show,
    /// validate, console, graph, ...) run on the stored state; commands that
    /// need no state (version, fmt, get, ...) run as they are.
    #[command(external_subcommand)]
    Terraform(Vec<String>),
}

#[derive(Debug, Args)]
pub struct TerraformArgs {
    /// terraform's flags and arguments, passed on as given.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,

    /// Who may read and write which states (format above).
    #[arg(long, value_name = "FILE", env = "STATEGRAPH_SERVE_TOKENS")]
    pub tokens: Option<PathBuf>,

    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve without --tokens on an address other than loopback (a proxy in
    /// front authenticates).
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

#[derive(Debug, Args)]
pub struct LocksArgs {
    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The recovery file the failed run named.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// How long to wait for locks held by other runs (default 0s: fail at once).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub lock_timeout: String,
}

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// Accepted for terraform compatibility: stategraph does not ask for confirmation.
    #[arg(long)]
    pub force: bool,

    /// The lock ID.
    #[arg(value_name = "LOCK_ID")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Every state, not only this directory's.
    #[arg(long)]
    pub all: bool,

    /// How many transactions, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,

    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Store a terraform state (v4), replacing the named state in one transaction.
    ///
    /// Like `terraform state push`: refuses a state of another lineage or a
    /// lower serial unless -force is given. Nothing is written when the input
    /// is refused.
    Push(PushArgs),

    /// Write the stored state to stdout as a terraform state (v4).
    ///
    /// With --at, the state as it was after a transaction (its ID in
    /// `stategraph log`) or at a time: restore it with `state push -force`.
    Pull(PullArgs),

    /// List resource instances, as `terraform state list` does.
    List(ListArgs),

    /// Show one resource instance's attributes, as `terraform state show` does.
    Show(ShowArgs),

    /// Other terraform state commands: mv, rm and replace-provider run with
    /// the whole state locked, the others are refused with what to do instead.
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Write even if lineage differs or the serial is lower than the stored one.
    #[arg(long)]
    pub force: bool,

    /// Take the state's lock while writing, as terraform's `state push`
    /// does: wait for (or fail on) every run writing the state and a lock
    /// taken through `stategraph serve` (-lock=false: don't).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub lock: bool,

    /// How long to wait for the state's lock (default 0s: fail at once).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub lock_timeout: String,

    /// Path to the state file, or `-` for stdin.
    pub path: String,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The state as of after transaction TXN (an ID of `stategraph log`),
    /// or at TIME (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC).
    #[arg(long, value_name = "TXN|TIME")]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// One SQL statement.
    #[arg(value_name = "SQL")]
    pub sql: String,

    /// Print a JSON array of objects on stdout.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print CSV (a header line, then one line per row) on stdout.
    #[arg(long)]
    pub csv: bool,

    /// Cancel the statement after this long (e.g. 500ms, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: String,

    /// Show sensitive values instead of "(sensitive value)".
    #[arg(long)]
    pub show_sensitive: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Instance address, e.g. module.m[0].aws_subnet.s["a"].
    pub address: String,

    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only instances whose `id` attribute equals ID.
    #[arg(long)]
    pub id: Option<String>,

    /// Filter: module, resource or instance addresses.
    pub addresses: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Instance address, e.g. module.m[0].aws_subnet.s["a"].
    pub address: String,
}

#[derive(Debug, Args)]
pub struct DepsArgs {
    /// Draw only the change cone of these (instances, resources or modules).
    pub addresses: Vec<String>,

    /// text, dot (Graphviz), mermaid or json.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DepsFormat,
}

/// The renderings of `stategraph deps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DepsFormat {
    Text,
    Dot,
    Mermaid,
    Json,
}

#[derive(Debug, Args)]
pub struct ConeArgs {
    /// Changed addresses (instances, resources or modules).
    #[arg(required = true)]
    pub addresses: Vec<String>,

    /// Print {"write": [...], "read": [...], "instances": N, ...} on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Say whether the embedded cluster exists and runs, and where.
    Status(DbArgs),
    /// Start the embedded cluster (creating it on first use).
    Start(DbArgs),
    /// Stop the embedded cluster.
    Stop(DbArgs),
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

/// stategraph's own subcommands: their flags are normalized. The arguments
/// of any other subcommand (plan, apply, init, output, ...) are terraform's
/// and are left exactly as written.
const OWN_COMMANDS: &[&str] = &[
    "state",
    "cone",
    "db",
    "log",
    "query",
    "history",
    "locks",
    "force-unlock",
    "recover",
    "help",
];

/// Global flags that take a value as the next argument.
const VALUE_FLAGS: &[&str] = &["database-url", "state", "chdir", "lock-lease"];

/// Rewrites terraform-style single-dash long flags (`-force`, `-chdir=DIR`)
/// to the two-dash form clap parses. Single letters (`-h`), a lone `-`
/// (stdin) and everything after `--` are left alone.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest_is_positional = false;
    let mut seen_command = false;
    let mut value_next = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || rest_is_positional {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if std::mem::take(&mut value_next) {
            out.push(arg);
            continue;
        }
        let is_flag = s.starts_with('-') && s.len() > 1;
        if s == "--" || (!is_flag && !seen_command && !OWN_COMMANDS.contains(&s)) {
            // The first word that is not ours is a terraform command: its
            // arguments are terraform's, as written.
            rest_is_positional = true;
            out.push(arg);
            continue;
        }
        if !is_flag {
            seen_command = true;
        } else if VALUE_FLAGS.contains(&s.trim_start_matches('-')) {
            value_next = true;
        }
        if s.starts_with('-')
            && !s.starts_with("--")
            && s.len() > 2
            && s[1..].starts_with(|c: char| c.is_ascii_alphabetic())
        {
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(arg);
        }
    }
    out
}

/// `message` (clap's) with each flag [`normalize_args`] rewrote put back as
/// the user wrote it: `'--bogus'` is `'-bogus'` again.
pub fn as_written(message: &str, raw: &[OsString], normalized: &[OsString]) -> String {
    let mut out = message.to_owned();
    for (written, read) in raw.iter().zip(normalized) {
        let (Some(written), Some(read)) = (written.to_str(), read.to_str()) else {
            continue;
        };
        if written == read {
            continue;
        }
        let name = |s: &str| s.split_once('=').map_or(s, |(n, _)| n).to_owned();
        let (written, read) = (name(written), name(read));
        for end in ["'", "="] {
            out = out.replace(&format!("'{read}{end}"), &format!("'{written}{end}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double() {
        assert_eq!(
            norm(&["sg", "-chdir=infra", "state", "push", "-force", "-"]),
            ["sg", "--chdir=infra", "state", "push", "--force", "-"]
        );
    }

    #[test]
    fn terraform_commands_keep_their_arguments_as_written() {
        assert_eq!(
            norm(&["sg", "-state", "x", "apply", "-auto-approve", "-var", "a=1"]),
            [
                "sg",
                "--state",
                "x",
                "apply",
                "-auto-approve",
                "-var",
                "a=1"
            ]
        );
        assert_eq!(
            norm(&["sg", "init", "-no-color"]),
            ["sg", "init", "-no-color"]
        );
        assert_eq!(norm(&["sg", "output", "-json"]), ["sg", "output", "-json"]);
        assert_eq!(
            norm(&["sg", "--state", "s", "state", "push", "-force", "f"]),
            ["sg", "--state", "s", "state", "push", "--force", "f"]
        );
        assert_eq!(norm(&["sg", "log", "-json"]), ["sg", "log", "--json"]);
    }

    #[test]
    fn short_flags_numbers_and_positionals_are_kept() {
        assert_eq!(norm(&["sg", "-h"]), ["sg", "-h"]);
        assert_eq!(norm(&["sg", "--json", "-1x"]), ["sg", "--json", "-1x"]);
        assert_eq!(norm(&["sg", "--", "-force"]), ["sg", "--", "-force"]);
    }

    #[test]
    fn flags_in_errors_are_shown_as_written() {
        let raw: Vec<OsString> = ["sg", "log", "-bogus=1", "--limit"]
            .iter()
            .map(OsString::from)
            .collect();
        let normalized = normalize_args(raw.clone());
        assert_eq!(
            as_written(
                "error: unexpected argument '--bogus=1' found ('--limit')",
                &raw,
                &normalized
            ),
            "error: unexpected argument '-bogus=1' found ('--limit')"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
