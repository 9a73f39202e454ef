//! Bringing a configuration's existing terraform state into stategraph
//! (`stategraph init -migrate-state`, terraform's own flag for moving
//! state): read it where the configuration keeps it — a local
//! `terraform.tfstate`, a `backend "local"` path, or any other backend
//! through terraform itself in a private data dir, with the user's
//! `-backend-config` flags — store it with its lineage and serial, and
//! record the discovery baseline so that the next plan is cheap.
//!
//! Also says, for a plan or apply of a state stategraph does not have yet,
//! whether the configuration keeps one elsewhere ([`unmigrated`]): then
//! that run stops instead of planning every resource as new.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};

use super::discover::discover;
use super::session::{self, prepare, Context, Session};
use super::Kind;
use crate::db::store::StoreError;
use crate::settings::Settings;
use crate::terraform::config::{self, Backend};
use crate::terraform::{Output, Terraform};
use crate::tfargs::TfFlags;
use crate::tfstate::{self, State};
use crate::ui::thousands;

/// Where the configuration in the working directory keeps its state.
enum Source {
    /// A local file.
    File(PathBuf),
    /// A backend terraform reaches (`s3`, `http`, `cloud`, ...).
    Backend(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Backend(kind) => write!(f, "its backend \"{kind}\""),
        }
    }
}

/// Where the configuration keeps the state of the current workspace.
fn source(settings: &Settings) -> Result<Source> {
    let root = &settings.workdir;
    let backend = config::backend(root).map_err(|e| {
        anyhow!(
            "cannot tell where this configuration keeps its state: {}",
            e.0
        )
    })?;
    let ws = settings.workspace.as_str();
    let file = |path: Option<&str>, workspace_dir: Option<&str>| match ws {
        "default" => root.join(path.unwrap_or("terraform.tfstate")),
        _ => root
            .join(workspace_dir.unwrap_or("terraform.tfstate.d"))
            .join(ws)
            .join("terraform.tfstate"),
    };
    Ok(match backend {
        Backend::Default => Source::File(file(None, None)),
        Backend::Local {
            path,
            workspace_dir,
        } => Source::File(file(path.as_deref(), workspace_dir.as_deref())),
        Backend::Other(kind) => Source::Backend(kind),
    })
}

/// For a run about to start state `name` empty: where the configuration
/// keeps a state of its own (a local state holding resources, or a backend
/// block), said as the error that stops the run; `None` when it keeps none.
pub fn unmigrated(settings: &Settings, name: &str) -> Option<anyhow::Error> {
    let found = match source(settings).ok()? {
        Source::File(path) => {
            let state = std::fs::read(&path).ok()?;
            let state = tfstate::parse(&state).ok()?;
            if state.resources.is_empty() {
                return None;
            }
            format!(
                "{} (terraform's local state: {} instances, serial {})",
                path.display(),
                thousands(state.object_count()),
                state.serial
            )
        }
        source => source.to_string(),
    };
    Some(anyhow!(
        "this configuration keeps its state in {found}, and stategraph has no state \"{name}\" \
         yet\n\n\
         Planning here would plan every resource as new. Bring the state in first:\n\n    \
         stategraph init -migrate-state\n\n\
         (with the -backend-config flags you give `terraform init`). If the configuration has \
         never been applied, that finds no state and stategraph starts an empty one. If its \
         state is stored under another name, give that name with --state."
    ))
}

/// `stategraph init -migrate-state`: brings the configuration's state in
/// (see the module docs). `backend_args`: the user's `-backend-config`
/// flags, for terraform's `init` of the configuration's backend.
pub async fn migrate(settings: &Settings, backend_args: &[String]) -> Result<()> {
    let ui = settings.ui;
    let source = source(settings)?;
    let (store, tf) = session::connect(settings).await?;
    let step = ui.step(format!("Reading the configuration's state from {source}"));
    let read = match &source {
        Source::File(path) => match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!(e).context(format!("cannot read {}", path.display()))),
        },
        Source::Backend(_) => pull_through_terraform(settings, &tf, backend_args).await,
    };
    let bytes = match read {
        Ok(Some(bytes)) if !bytes.iter().all(u8::is_ascii_whitespace) => bytes,
        Ok(_) => {
            step.done("none found");
            ui.info(format!(
                "Nothing to migrate: {source} holds no state. The first apply creates state \"{}\".",
                settings.state_name()
            ));
            return Ok(());
        }
        Err(e) => {
            step.fail();
            return Err(e);
        }
    };
    let state = match tfstate::parse(&bytes) {
        Ok(state) => state,
        Err(e) => {
            step.fail();
            return Err(anyhow!(e).context(format!(
                "the state in {source} is not a state stategraph can store; nothing was written"
            )));
        }
    };
    step.done(format!(
        "{} instances, serial {}, lineage {}",
        thousands(state.object_count()),
        state.serial,
        state.lineage
    ));

    let name = settings.state_name();
    let existing = session::find_state(&store, settings, &name, Kind::Apply).await?;
    let report = store
        .push(
            &name,
            &state,
            false,
            &settings.actor,
            "stategraph init -migrate-state",
        )
        .await
        .map_err(|e| refused(e, &name, &source))?;
    let id = match existing {
        Some(id) => id,
        None => store
            .state_id(&name)
            .await?
            .ok_or_else(|| anyhow!("state \"{name}\" vanished"))?,
    };
    if existing.is_none() {
        session::record_origin(&store, settings, id).await?;
    }
    ui.info(format!(
        "stategraph: state \"{name}\" in {} holds the configuration's state: transaction {}, {} \
         added, {} changed, {} removed (serial {}, lineage {} kept). {} is left as it was; \
         stategraph no longer reads it.",
        store.display(),
        report.txn_id,
        report.added,
        report.changed,
        report.removed,
        state.serial,
        state.lineage,
        source
    ));
    record_baseline(settings, store, tf, (name, id), &state).await
}

/// The error for a state the store refused: another lineage, or an older
/// serial, is stored under that name already.
fn refused(e: StoreError, name: &str, source: &Source) -> anyhow::Error {
    let why = match &e {
        StoreError::Lineage { .. } => "it holds another terraform state (another lineage)",
        StoreError::OlderSerial { .. } | StoreError::SameSerial { .. } => {
            "it holds a newer version of this state"
        }
        _ => return anyhow!(e).context(format!("cannot store the state of {source}")),
    };
    anyhow!(e).context(format!(
        "state \"{name}\" exists already and {why}; nothing was written\n\n\
         Compare it with `stategraph state pull`. To replace it with the state of {source} \
         anyway, pull that state and run `stategraph state push -force FILE`."
    ))
}

/// Terraform's `init` of the configuration's own backend in a private data
/// dir, then `state pull`; `None` when the backend holds no state.
async fn pull_through_terraform(
    settings: &Settings,
    tf: &Terraform,
    backend_args: &[String],
) -> Result<Option<Vec<u8>>> {
    let dir = settings.layout().backend_dir()?;
    let init = dir
        .command(tf)
        .env_remove("TF_CLI_ARGS_init")
        .args(["init", "-input=false", "-lockfile=readonly", "-no-color"])
        .args(backend_args)
        .stdout(Output::Capture)
        .run()
        .await?;
    if !init.success() {
        settings.ui.replay(&init.stdout, &[]);
        bail!("terraform could not reach the configuration's backend (init failed, above)");
    }
    let mut pull = dir.command(tf).args(["state", "pull"]).own();
    if settings.workspace != "default" {
        pull = pull.env("TF_WORKSPACE", &settings.workspace);
    }
    let pulled = pull
        .stdout(Output::Capture)
        .run_ok()
        .await
        .context("terraform could not read the backend's state")?;
    Ok(Some(pulled.stdout))
}

/// Records the discovery baseline of the migrated state: terraform's
/// refresh-less plan of the whole configuration on it (the first plan
/// after a push needs one anyway), so that the next plan compares the
/// configuration with it and plans only what changed.
async fn record_baseline(
    settings: &Settings,
    store: crate::db::store::Store,
    tf: Terraform,
    state: (String, i64),
    stored: &State,
) -> Result<()> {
    let command = "stategraph init -migrate-state".to_owned();
    let session = Session::new(settings, store, state, Kind::Plan, command);
    let flags = TfFlags {
        refresh: true,
        ..TfFlags::default()
    };
    let cx = Context { session, tf, flags };
    let dir = settings.layout().run_dir(stored)?;
    prepare(&dir, &cx.tf, &cx.session.store).await?;
    let found = discover(&cx, &dir, stored, &[]).await?;
    if !found.changed.is_empty() {
        settings.ui.info(format!(
            "stategraph: the configuration differs from this state in {} instances: \
             `stategraph plan` shows how.",
            thousands(found.changed.len())
        ));
    }
    Ok(())
}
