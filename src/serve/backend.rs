//! terraform's `http` backend protocol over the stored states: one URL per
//! state, `/state/NAME` (NAME as `stategraph state list --state` takes it,
//! slashes and all), answering GET, POST (or PUT), DELETE, LOCK and UNLOCK.
//!
//! A LOCK takes [`WHOLE_STATE`], the state's own lock row, exclusively in
//! the lock tables the CLI uses. Every stategraph run holds that row shared
//! besides its rows, so the one row excludes them all, whatever the state's
//! size: `stategraph locks` lists it and a stategraph apply waits for it or
//! fails naming it, and a LOCK while a stategraph run holds rows fails with
//! 423 and the holder as terraform's LockInfo. Nothing runs behind an HTTP lock, so the server renews its
//! lease while it is held; a server that dies stops renewing and its locks
//! expire as a dead CLI's do. A POST is a full state, merged row by row
//! with history in one transaction (as `state push`, lineage and serial
//! rules included), fenced by the lock it names (`?ID=`) or, without one,
//! by a lock of the whole state taken for the write alone.
//!
//! Authentication happened before a handler runs ([`super::auth`]); each
//! handler checks the caller's scope for the state it names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};

use super::auth::Identity;
use super::App;
use crate::db::locks::{Conflict, Heartbeat, LockError, LockRequest, WHOLE_STATE};
use crate::db::store::{Actor, StoreError};
use crate::tfstate;

/// The largest state a POST may carry.
const MAX_STATE_BYTES: usize = 1 << 30;

/// The backend's routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/state/{*name}", any(dispatch))
        .layer(DefaultBodyLimit::max(MAX_STATE_BYTES))
        .with_state(app)
}

/// The HTTP locks this server holds, by state name: terraform's lock ID
/// (what its UNLOCK and `?ID=` carry), ours, and the lease renewal.
#[derive(Clone, Default)]
pub struct HttpLocks(Arc<Mutex<HashMap<String, Held>>>);

struct Held {
    /// The ID terraform gave in its LOCK's LockInfo.
    terraform_id: String,
    holder_id: i64,
    heartbeat: Heartbeat,
}

impl HttpLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // A handler that panicked holding it left a consistent map (every
        // change is one insert or remove).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our lock ID for terraform's lock `terraform_id` on `state`, if this
    /// server holds it and its lease was not lost.
    fn holder(&self, state: &str, terraform_id: &str) -> Option<i64> {
        let mut map = self.map();
        let held = map.get(state)?;
        if held.heartbeat.is_lost() {
            map.remove(state);
            return None;
        }
        (held.terraform_id == terraform_id).then_some(held.holder_id)
    }

    /// Takes out the lock on `state` if `terraform_id` names it (`None`:
    /// terraform's force-unlock, which sends no ID): `Err` with the ID held
    /// when another is.
    fn take(&self, state: &str, terraform_id: Option<&str>) -> Result<Option<Held>, String> {
        let mut map = self.map();
        match map.get(state) {
            None => Ok(None),
            Some(h) if terraform_id.is_some_and(|id| id != h.terraform_id) => {
                Err(h.terraform_id.clone())
            }
            Some(_) => Ok(map.remove(state)),
        }
    }

    /// Every lock, taken out (the server is stopping).
    pub fn drain(&self) -> Vec<(String, i64, Heartbeat)> {
        self.map()
            .drain()
            .map(|(state, h)| (state, h.holder_id, h.heartbeat))
            .collect()
    }
}

/// terraform's LockInfo, as its LOCK and UNLOCK send it and as a 423
/// answers it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LockInfo {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Operation", default)]
    operation: String,
    #[serde(rename = "Info", default)]
    info: String,
    #[serde(rename = "Who", default)]
    who: String,
    #[serde(rename = "Version", default)]
    version: String,
    #[serde(rename = "Created", default, skip_serializing_if = "String::is_empty")]
    created: String,
    #[serde(rename = "Path", default)]
    path: String,
}

#[derive(Deserialize)]
struct LockQuery {
    #[serde(rename = "ID")]
    id: Option<String>,
}

async fn dispatch(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(query): Query<LockQuery>,
    Extension(identity): Extension<Identity>,
    method: Method,
    body: Bytes,
) -> Response {
    let write = !matches!(method, Method::GET | Method::HEAD);
    if !identity.allows(&name, write) {
        let what = if write { "write" } else { "read" };
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "\"{}\" may not {what} state \"{name}\" (see its scope and access in the tokens file)",
                identity.name
            ),
        );
    }
    let backend = Backend {
        app: &app,
        name: &name,
        identity: &identity,
    };
    let answer = match method.as_str() {
        "GET" | "HEAD" => backend.get().await,
        "POST" | "PUT" => backend.post(query.id.as_deref(), &body).await,
        "DELETE" => backend.delete(query.id.as_deref()).await,
        "LOCK" => backend.lock(&body).await,
        "UNLOCK" => backend.unlock(&body).await,
        other => Err(text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{other} is not a method of terraform's http backend: GET, POST, DELETE, LOCK, UNLOCK"),
        )),
    };
    answer.unwrap_or_else(|refusal| refusal)
}

type Answer = Result<Response, Response>;

/// One request on one state.
struct Backend<'a> {
    app: &'a App,
    name: &'a str,
    identity: &'a Identity,
}

impl Backend<'_> {
    /// The state as `state pull` prints it; 404 when there is none (terraform: no state yet).
    async fn get(&self) -> Answer {
        match self.app.store.pull(self.name).await {
            Ok(Some(state)) => Ok((
                [(header::CONTENT_TYPE, "application/json")],
                state.to_json(),
            )
                .into_response()),
            Ok(None) => Err(text(
                StatusCode::NOT_FOUND,
                format!("no state named \"{}\"", self.name),
            )),
            Err(e) => Err(self.failed("read", &e)),
        }
    }

    /// Stores the full state of the body, under the lock `id` names (or,
    /// without one, a lock of the whole state for this write alone).
    async fn post(&self, id: Option<&str>, body: &[u8]) -> Answer {
        let state = tfstate::parse(body).map_err(|e| {
            text(
                StatusCode::BAD_REQUEST,
                format!("the body is not a terraform state: {e}; nothing was written"),
            )
        })?;
        self.write(id, "http backend POST", &state).await
    }

    /// Empties the state (its rows go to the history, where `state pull
    /// --at` finds them), keeping its lineage.
    async fn delete(&self, id: Option<&str>) -> Answer {
        let stored = match self.app.store.pull(self.name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(StatusCode::OK.into_response()),
            Err(e) => return Err(self.failed("read", &e)),
        };
        let mut empty = tfstate::State::empty(stored.lineage.clone());
        empty.serial = stored.serial + 1;
        empty.terraform_version = stored.terraform_version.clone();
        self.write(id, "http backend DELETE", &empty).await
    }

    async fn write(&self, id: Option<&str>, command: &str, state: &tfstate::State) -> Answer {
        let (holder, own) = match id {
            Some(id) => match self.app.locks.holder(self.name, id) {
                Some(holder) => (holder, false),
                None => {
                    return Err(text(
                        StatusCode::CONFLICT,
                        format!(
                        "lock {id} is not held on state \"{}\" (it was released, force-unlocked \
                             or its lease expired); nothing was written",
                        self.name
                    ),
                    ))
                }
            },
            None => (self.lock_whole(command).await?, true),
        };
        let actor = Actor {
            user: self.identity.name.clone(),
            host: self.app.host.clone(),
            ..Actor::default()
        };
        let written = self
            .app
            .store
            .push_locked(self.name, state, holder, &actor, command)
            .await;
        if own {
            if let Err(e) = self.app.store.release(holder).await {
                self.app.ui.warn(format!(
                    "stategraph serve: could not free lock {holder} on \"{}\" after writing ({e}); \
                     it expires with its lease",
                    self.name
                ));
            }
        }
        match written {
            Ok(report) => {
                self.app.ui.info(format!(
                    "{} \"{}\" by {}: {} added, {} changed, {} removed (transaction {}, serial {})",
                    command,
                    self.name,
                    self.identity.name,
                    report.added,
                    report.changed,
                    report.removed,
                    report.txn_id,
                    report.serial
                ));
                Ok(StatusCode::OK.into_response())
            }
            Err(
                e @ (StoreError::Lineage { .. }
                | StoreError::OlderSerial { .. }
                | StoreError::SameSerial { .. }
                | StoreError::LeaseLost { .. }),
            ) => Err(text(StatusCode::CONFLICT, e.to_string())),
            Err(e @ StoreError::Invalid(_)) => Err(text(
                StatusCode::BAD_REQUEST,
                format!("{e}; nothing was written"),
            )),
            Err(e) => Err(self.failed("write", &e)),
        }
    }

    /// Locks the whole state for a write without a LOCK before it (`-lock=false`).
    async fn lock_whole(&self, command: &str) -> Result<i64, Response> {
        let actor = Actor {
            user: self.identity.name.clone(),
            host: self.app.host.clone(),
            ..Actor::default()
        };
        let state_id = self.state_id(&actor).await?;
        let holder = self.take_lock(state_id, command, &actor).await?;
        Ok(holder)
    }

    /// Takes terraform's lock on the whole state.
    async fn lock(&self, body: &[u8]) -> Answer {
        let info: LockInfo = serde_json::from_slice(body).map_err(|e| {
            text(
                StatusCode::BAD_REQUEST,
                format!("the body of LOCK is not terraform's lock info: {e}"),
            )
        })?;
        if info.id.is_empty() {
            return Err(text(StatusCode::BAD_REQUEST, "the lock info has no ID"));
        }
        // Held by this very lock already (a retried request).
        if self.app.locks.holder(self.name, &info.id).is_some() {
            return Ok(StatusCode::OK.into_response());
        }
        let (user, host) = match info.who.split_once('@') {
            Some((u, h)) => (u.to_owned(), h.to_owned()),
            None => (info.who.clone(), String::new()),
        };
        let actor = Actor {
            user: if user.is_empty() {
                self.identity.name.clone()
            } else {
                user
            },
            host,
            ..Actor::default()
        };
        let operation = info
            .operation
            .strip_prefix("OperationType")
            .unwrap_or(&info.operation)
            .to_lowercase();
        let command = match (operation.is_empty(), self.app.auth.is_open()) {
            (true, true) => "terraform (http backend)".to_owned(),
            (true, false) => format!("terraform (http backend, as {})", self.identity.name),
            (false, true) => format!("terraform {operation} (http backend)"),
            (false, false) => format!(
                "terraform {operation} (http backend, as {})",
                self.identity.name
            ),
        };
        let state_id = self.state_id(&actor).await?;
        let holder = self.take_lock(state_id, &command, &actor).await?;
        let heartbeat = self.app.store.heartbeat(holder, self.app.lease);
        self.app.locks.map().insert(
            self.name.to_owned(),
            Held {
                terraform_id: info.id,
                holder_id: holder,
                heartbeat,
            },
        );
        Ok(StatusCode::OK.into_response())
    }

    /// Frees terraform's lock: the one its lock info names, or (an UNLOCK
    /// without a body: `terraform force-unlock`) this server's lock on the state.
    async fn unlock(&self, body: &[u8]) -> Answer {
        let id = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let info: LockInfo = serde_json::from_slice(body).map_err(|e| {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("the body of UNLOCK is not terraform's lock info: {e}"),
                )
            })?;
            Some(info.id)
        };
        let held = match self.app.locks.take(self.name, id.as_deref()) {
            Ok(Some(held)) => held,
            Ok(None) => {
                return Err(text(
                    StatusCode::CONFLICT,
                    format!(
                        "state \"{}\" is not locked through this server (its lock may have \
                         expired); `stategraph locks` lists the locks held",
                        self.name
                    ),
                ))
            }
            Err(other) => {
                return Err(text(
                    StatusCode::CONFLICT,
                    format!(
                        "state \"{}\" is locked by lock {other}, not {}",
                        self.name,
                        id.unwrap_or_default()
                    ),
                ))
            }
        };
        held.heartbeat.stop().await;
        match self.app.store.release(held.holder_id).await {
            Ok(_) => Ok(StatusCode::OK.into_response()),
            Err(e) => Err(self.failed("unlock", &e)),
        }
    }

    /// The state's id, creating it empty when it does not exist yet (a lock
    /// needs a state to hang on; `GET` then answers it, serial 0).
    async fn state_id(&self, actor: &Actor) -> Result<i64, Response> {
        if let Some(id) = self
            .app
            .store
            .state_id(self.name)
            .await
            .map_err(|e| self.failed("read", &e))?
        {
            return Ok(id);
        }
        let lineage =
            crate::engine::session::new_lineage().map_err(|e| self.failed("create", &e))?;
        match self
            .app
            .store
            .push(
                self.name,
                &tfstate::State::empty(lineage),
                false,
                actor,
                "create (http backend)",
            )
            .await
        {
            // Someone else created it at the same moment: theirs is as good.
            Ok(_) | Err(StoreError::Lineage { .. }) | Err(StoreError::OlderSerial { .. }) => {}
            Err(e) => return Err(self.failed("create", &e)),
        }
        self.app
            .store
            .state_id(self.name)
            .await
            .map_err(|e| self.failed("read", &e))?
            .ok_or_else(|| self.failed("create", &format!("state \"{}\" vanished", self.name)))
    }

    /// Locks [`WHOLE_STATE`] exclusively, at once or not at all (terraform
    /// retries itself, with -lock-timeout). Every stategraph run holds it
    /// shared, so no run holds or adds a row meanwhile; at 100,000
    /// instances, a lock row for each would cost seconds per LOCK.
    async fn take_lock(
        &self,
        state_id: i64,
        command: &str,
        actor: &Actor,
    ) -> Result<i64, Response> {
        let whole = [WHOLE_STATE.to_owned()];
        let request = LockRequest {
            state_id,
            exclusive: &whole,
            shared: &[],
            command,
            actor,
            lease: self.app.lease,
            txn_id: None,
        };
        match self.app.store.try_lock(&request).await {
            Ok(h) => Ok(h.id),
            Err(LockError::Conflict(conflicts)) => Err(locked(self.name, &conflicts)),
            Err(e) => Err(self.failed("lock", &e)),
        }
    }

    /// A 500 naming what failed, said on the server's terminal too.
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) -> Response {
        let msg = format!("cannot {what} state \"{}\": {e}", self.name);
        self.app.ui.warn(format!("stategraph serve: {msg}"));
        text(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}

/// 423 with the first holder in the way as terraform's LockInfo: terraform
/// prints it under "Error acquiring the state lock".
fn locked(state: &str, conflicts: &[Conflict]) -> Response {
    let Some(first) = conflicts.iter().find(|c| !c.queued).or(conflicts.first()) else {
        return text(StatusCode::LOCKED, format!("state \"{state}\" is locked"));
    };
    let h = &first.holder;
    let contested: Vec<&str> = first
        .addresses
        .iter()
        .take(5)
        .map(|(a, _)| match a.as_str() {
            WHOLE_STATE => "the whole state",
            a => a,
        })
        .collect();
    let more = first.addresses.len().saturating_sub(contested.len());
    let info = LockInfo {
        // terraform (1.11) prints only the ID of the lock in the way
        // ("already locked: ID=..."), so the ID names its holder too.
        id: format!(
            "{}{} ({} by {})",
            if first.queued { "ticket " } else { "" },
            h.id,
            h.command,
            h.who()
        ),
        operation: h.command.clone(),
        info: format!(
            "{} stategraph {} {}; contested: {}{}; lease expires {}{}",
            if first.queued {
                "waiting in the queue as"
            } else {
                "held as"
            },
            if first.queued { "ticket" } else { "lock" },
            h.id,
            contested.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            h.lease_expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
            if first.queued {
                String::new()
            } else {
                format!(" (stategraph force-unlock {} frees it)", h.id)
            },
        ),
        who: h.who(),
        version: concat!("stategraph ", env!("CARGO_PKG_VERSION")).to_owned(),
        created: h
            .acquired_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        path: state.to_owned(),
    };
    (
        StatusCode::LOCKED,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&info).expect("serializable"),
    )
        .into_response()
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_info_reads_terraforms_and_writes_its_field_names() {
        let sent = r#"{"ID":"6b1c","Operation":"OperationTypeApply","Info":"","Who":"alice@laptop","Version":"1.11.0","Created":"2026-12-05T04:00:00.123456Z","Path":""}"#;
        let info: LockInfo = serde_json::from_str(sent).unwrap();
        assert_eq!(info.id, "6b1c");
        assert_eq!(info.who, "alice@laptop");
        let back = serde_json::to_value(&info).unwrap();
        for key in [
            "ID",
            "Operation",
            "Info",
            "Who",
            "Version",
            "Created",
            "Path",
        ] {
            assert!(back.get(key).is_some(), "{key} missing in {back}");
        }
    }

    #[test]
    fn no_instance_address_is_the_whole_state_row() {
        assert!(crate::address::parse_instance(WHOLE_STATE).is_err());
    }
}
