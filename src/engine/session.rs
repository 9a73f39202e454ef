//! What a run works with: the store and the state it writes, who runs it
//! and how the transaction log names it ([`Session`]); for plan and apply,
//! terraform and the user's flags as well ([`Context`]). Also readies a
//! private run dir for terraform ([`prepare`]).
//!
//! Every lock request is built here ([`Session::lease`]), so that each run
//! locks with the same holder description and lease.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::json;

use super::lease::Lease;
use super::recovery;
use super::Kind;
use crate::checkout::Origin;
use crate::db::locks::{LockRequest, WHOLE_STATE};
use crate::db::store::{Since, Snapshot, Store, StoreError, View};
use crate::error::Exit;
use crate::settings::Settings;
use crate::terraform::{RunDir, Terraform, TerraformError};
use crate::tfargs::TfFlags;
use crate::tfstate::State;
use crate::ui::Ui;

/// One run's store, state and log identity.
pub struct Session<'a> {
    pub settings: &'a Settings,
    pub ui: Ui,
    pub store: Store,
    /// The stored state's name and id.
    pub name: String,
    pub state_id: i64,
    pub kind: Kind,
    /// The command as the transaction log and lock holders show it.
    pub command: String,
}

/// A plan or apply run: its session, terraform and the user's flags.
pub struct Context<'a> {
    pub session: Session<'a>,
    pub tf: Terraform,
    pub flags: TfFlags,
}

impl<'a> Session<'a> {
    /// A session on the stored state `name` (id `state_id`) of `store`.
    pub fn new(
        settings: &'a Settings,
        store: Store,
        (name, state_id): (String, i64),
        kind: Kind,
        command: String,
    ) -> Session<'a> {
        Session {
            settings,
            ui: settings.ui,
            store,
            name,
            state_id,
            kind,
            command,
        }
    }

    /// The stored state, as [`Session::snapshot`] reads it.
    pub async fn pull(&self) -> Result<State> {
        Ok(self.snapshot().await?.state)
    }

    /// The stored state in one consistent read, with the version of each
    /// row (what makes a saved plan stale or not). Rows that runs in flight
    /// are changing are read as they were before: a run works from what
    /// others committed, never from their half-done applies (a plan takes
    /// no locks; an apply reads this before it locks, and again after).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        self.store
            .snapshot(&self.name, View::Settled)
            .await?
            .ok_or_else(|| anyhow!("state \"{}\" vanished", self.name))
    }

    /// The stored state as [`Session::snapshot`] reads it, its rows read
    /// light ([`crate::db::store::Store::light_snapshot`]).
    pub async fn light_snapshot(&self) -> Result<Snapshot> {
        self.store
            .light_snapshot(&self.name)
            .await?
            .ok_or_else(|| anyhow!("state \"{}\" vanished", self.name))
    }

    /// The stored state read again if anything in it changed since
    /// `before` was read (see [`Store::settled_since`]), else `None`.
    pub async fn snapshot_since(&self, before: &Snapshot) -> Result<Option<Snapshot>> {
        match self.store.settled_since(&self.name, before).await? {
            Since::Unchanged => Ok(None),
            Since::Changed(snapshot) => Ok(Some(*snapshot)),
            Since::Gone => bail!("state \"{}\" vanished", self.name),
        }
    }

    /// Says, once per run in flight, which of `addresses` it is changing
    /// right now and that this plan reads them as before that change.
    pub async fn note_in_flight(&self, addresses: &[String]) -> Result<()> {
        for c in self.store.writers(self.state_id, addresses).await? {
            const SHOWN: usize = 3;
            let mut named: Vec<&str> = c
                .addresses
                .iter()
                .take(SHOWN)
                .map(|(a, _)| a.as_str())
                .collect();
            let more = c.addresses.len().saturating_sub(SHOWN);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let by = match c.holder.txn_id {
                Some(txn) => format!("transaction {txn}"),
                None => format!("lock {}", c.holder.id),
            };
            let one = named.len() == 1 && more.is_empty();
            let list = std::mem::take(&mut named).join(", ");
            self.ui.info(format!(
                "{list}{more} {} being changed by {by} ({}, `{}`); this plan reads {} as before \
                 that change.",
                if one { "is" } else { "are" },
                c.holder.who(),
                c.holder.command,
                if one { "it" } else { "them" },
            ));
        }
        Ok(())
    }

    /// Locks `exclusive` and `shared` for this run, waiting up to `timeout`
    /// and showing whom it waits for (see [`Lease::acquire`]).
    pub async fn lease(
        &self,
        exclusive: &[String],
        shared: &[String],
        timeout: std::time::Duration,
    ) -> Result<Lease<'_>> {
        let shared = with_whole_state(exclusive, shared);
        Lease::acquire(
            &self.store,
            self.ui,
            &self.request(exclusive, &shared),
            timeout,
        )
        .await
    }

    /// Locks `exclusive` and `shared` at once, or not at all (never waits).
    pub async fn try_lease(&self, exclusive: &[String], shared: &[String]) -> Option<Lease<'_>> {
        let shared = with_whole_state(exclusive, shared);
        Lease::try_acquire(&self.store, &self.request(exclusive, &shared)).await
    }

    fn request<'r>(&'r self, exclusive: &'r [String], shared: &'r [String]) -> LockRequest<'r> {
        LockRequest {
            state_id: self.state_id,
            exclusive,
            shared,
            command: &self.command,
            actor: &self.settings.actor,
            lease: self.settings.lock_lease,
            txn_id: None,
        }
    }

    /// Takes in what this user's runs that died left (see
    /// [`recovery::rescue_orphans`]), and warns about each.
    pub async fn rescue_dead_runs(&self) {
        for line in recovery::rescue_orphans(self.settings, &self.store).await {
            self.ui.warn(line);
        }
    }

    /// One line per changed row, `  KEY: changed by transaction N (who,
    /// command, when)`, or `gone` when the row no longer exists.
    pub async fn describe_changes(
        &self,
        changed: &[(String, Option<i64>)],
        gone: &str,
    ) -> Result<Vec<String>> {
        let log = self.store.log(Some(&self.name), 500).await?;
        Ok(changed
            .iter()
            .map(|(key, txn)| {
                let by = txn.and_then(|t| log.iter().find(|e| e.id == t)).map(|e| {
                    format!(
                        "changed by transaction {} ({}@{}, {}, {})",
                        e.id,
                        e.user,
                        e.host,
                        e.command,
                        e.started_at.format("%Y-%m-%d %H:%M:%S UTC")
                    )
                });
                format!("  {key}: {}", by.unwrap_or_else(|| gone.to_owned()))
            })
            .collect())
    }

    /// Rows of `addresses` whose (version, transaction) is no longer as in
    /// `then`: `(key, transaction now, or None if gone)`.
    pub async fn stale_rows(
        &self,
        addresses: &[String],
        then: &BTreeMap<String, (i64, i64)>,
    ) -> Result<Vec<(String, Option<i64>)>> {
        let now = self.store.versions(&self.name, addresses).await?;
        let mut changed: Vec<(String, Option<i64>)> = Vec::new();
        for key in then.keys().chain(now.keys()) {
            let (before, current) = (then.get(key), now.get(key));
            if before != current && !changed.iter().any(|(k, _)| k == key) {
                changed.push((key.clone(), current.map(|(_, txn)| *txn)));
            }
        }
        Ok(changed)
    }
}

/// `shared` and [`WHOLE_STATE`]: every run holds the state itself shared,
/// so that a lock of the whole state (terraform's, through `stategraph
/// serve`) excludes it even where it only adds rows.
fn with_whole_state(exclusive: &[String], shared: &[String]) -> Vec<String> {
    let mut all = shared.to_vec();
    if !exclusive.iter().any(|a| a == WHOLE_STATE) {
        all.push(WHOLE_STATE.to_owned());
    }
    all
}

/// Opens the store while terraform's version is checked (tens of
/// milliseconds, side by side). No terraform at all is said before
/// anything else.
pub async fn connect(settings: &Settings) -> Result<(Store, Terraform)> {
    let Some(bin) = settings.terraform.clone() else {
        return Err(TerraformError::NotConfigured.into());
    };
    let hidden = settings.database.hidden_env();
    let version = tokio::task::spawn_blocking(move || Terraform::discover(Some(&bin), &hidden));
    let store = crate::db::open(settings).await;
    let tf = version
        .await
        .map_err(|e| anyhow!("terraform version check did not finish: {e}"))??
        .with_ui(settings.ui);
    Ok((store?, tf))
}

/// The id of the stored state `name` for a run of `kind` from this
/// checkout, `None` if there is none. A state created from another checkout
/// (another repository, or another root module of this one) is refused:
/// planning its resources here would plan to destroy what this
/// configuration does not declare. A state with no recorded origin (older)
/// takes this checkout's when a run writes it under its default name;
/// `--adopt-state` records this checkout in place of another. Outside git
/// nothing is checked (see [`crate::checkout::Checkout::origin`]).
pub async fn find_state(
    store: &Store,
    settings: &Settings,
    name: &str,
    kind: Kind,
) -> Result<Option<i64>> {
    let Some(id) = store.state_id(name).await? else {
        return Ok(None);
    };
    let Some(here) = settings.origin() else {
        return Ok(Some(id));
    };
    let recorded = store
        .origin(id)
        .await?
        .and_then(|v| serde_json::from_value::<Origin>(v).ok());
    let writes = kind != Kind::Plan;
    match recorded {
        Some(origin) if origin == here => {}
        Some(origin) if !settings.adopt_state => bail!(
            "state \"{name}\" was created from another checkout\n\n\
             It holds the resources of {origin}, and this directory is {here}. Planning it from \
             here would plan to destroy every resource this configuration does not declare.\n\n\
             Run from a checkout of {origin}, or name this directory's own state with --state \
             NAME (STATEGRAPH_STATE). If this checkout is where that state's configuration \
             lives now (the repository or the root module moved), run once with \
             --adopt-state to record it."
        ),
        Some(origin) if writes => {
            store.set_origin(id, &serde_json::to_value(&here)?).await?;
            settings.ui.info(format!(
                "stategraph: state \"{name}\" now comes from {here} (was {origin}; --adopt-state)"
            ));
        }
        None if writes && (settings.explicit_state.is_none() || settings.adopt_state) => {
            store.set_origin(id, &serde_json::to_value(&here)?).await?
        }
        _ => {}
    }
    Ok(Some(id))
}

/// Records this checkout as the origin of state `id` (nothing outside git).
pub async fn record_origin(store: &Store, settings: &Settings, id: i64) -> Result<()> {
    if let Some(origin) = settings.origin() {
        store.set_origin(id, &serde_json::to_value(origin)?).await?;
    }
    Ok(())
}

/// Creates the state `name`, empty (serial 0, `lineage`), recording this
/// checkout as its origin, and says so prominently: every resource of the
/// configuration will be planned as new.
pub async fn create_state(
    store: &Store,
    settings: &Settings,
    name: &str,
    lineage: String,
) -> Result<i64> {
    match store
        .push(
            name,
            &State::empty(lineage),
            false,
            &settings.actor,
            "create",
        )
        .await
    {
        Ok(_) => settings
            .ui
            .warn(new_state_warning(name, store.display(), true)),
        // Someone else created it at the same moment: theirs is as good.
        Err(StoreError::Lineage { .. }) | Err(StoreError::OlderSerial { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let id = store
        .state_id(name)
        .await?
        .ok_or_else(|| anyhow!("state \"{name}\" vanished"))?;
    if store.origin(id).await?.is_none() {
        record_origin(store, settings, id).await?;
    }
    Ok(id)
}

/// What a run says when the state it plans does not exist yet.
pub fn new_state_warning(name: &str, database: &str, created: bool) -> String {
    let what = match created {
        true => format!("created state \"{name}\" in {database}, empty"),
        false => format!("there is no state \"{name}\" in {database} yet"),
    };
    format!(
        "{what}: every resource of this configuration is planned as new.\n\n\
         If these resources exist already (a terraform state kept elsewhere: a local \
         terraform.tfstate or a backend), stop here and bring that state in first with \
         `stategraph init -migrate-state`, or name the state that holds them with --state."
    )
}

/// A random UUID (v4), as terraform's lineages are.
pub fn new_lineage() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom for a new lineage")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Readies a private run dir for terraform: `init`, or, once this terraform
/// version's hash of our backend block is known (learned from an earlier
/// `init`, kept in the database), nothing but writing that hash: the user's
/// providers and modules are linked already. Skipped only where the user's
/// directory was initialized (or needs nothing installed), so that a
/// missing provider still gets terraform's own "run init" error.
pub async fn prepare(dir: &RunDir, tf: &Terraform, store: &Store) -> Result<()> {
    let key = format!("terraform {} local backend hash", tf.version_text());
    let (root, user_data) = (dir.root(), &dir.layout().user_data_dir);
    let providers_ready =
        user_data.join("providers").is_dir() || !root.join(".terraform.lock.hcl").exists();
    let modules_ready =
        user_data.join("modules").join("modules.json").is_file() || !declares_modules(root);
    if providers_ready && modules_ready {
        if let Ok(Some(v)) = store.config_info(&key).await {
            if let Some(hash) = v["hash"].as_u64() {
                dir.skip_init(hash)?;
                return Ok(());
            }
        }
    }
    dir.init(tf).await.map_err(exit_on_terraform_failure)?;
    if let Some(hash) = dir.backend_hash() {
        // Best effort: without it the next run runs init again.
        let _ = store.put_config_info(&key, &json!({ "hash": hash })).await;
    }
    Ok(())
}

/// Whether a configuration file of the root module declares a module call
/// (then `init` must install modules; nested calls need a root one first).
fn declares_modules(root: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return true;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let text = || std::fs::read_to_string(e.path()).unwrap_or_default();
        if name.ends_with(".tf") {
            text()
                .lines()
                .any(|l| l.trim_start().starts_with("module "))
        } else if name.ends_with(".tf.json") {
            text().contains("\"module\"")
        } else {
            false
        }
    })
}

/// Terraform failed before we did anything: its message is out, pass its code.
fn exit_on_terraform_failure(e: TerraformError) -> anyhow::Error {
    match e.exit_code() {
        Some(code) => Exit(code).into(),
        None => e.into(),
    }
}

/// From now on, the plans terraform runs in `dir` serve each provider of
/// `config` that may be from one process, started by stategraph (see
/// [`crate::terraform::providers`]), unless settings, the terraform binary
/// or the user's `TF_CLI_ARGS` say otherwise.
pub fn share_providers(cx: &Context<'_>, dir: &RunDir, config: &crate::terraform::config::Config) {
    let settings = cx.session.settings;
    // `-destroy` in the user's TF_CLI_ARGS: a refresh walk, then the plan.
    let destroying = settings
        .tf_cli_args
        .iter()
        .any(|(_, v)| v.contains("-destroy"));
    if settings.shared_providers && !destroying && !cx.tf.is_opentofu() {
        let cache = settings.embedded.data_dir.join("providers");
        dir.share_providers(config, Some(&cache));
    }
}
