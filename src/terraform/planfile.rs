//! What terraform planned, read from its binary plan file instead of from
//! `terraform show -json`, which starts terraform and loads every
//! provider's schema (seconds with the aws provider).
//!
//! A plan file is a zip archive; its `tfplan` entry is protobuf (terraform's
//! `internal/plans/planproto/planfile.proto`, format version 3, which
//! OpenTofu's plan files share). Only the fields stategraph needs are
//! declared here; protobuf skips the others. Any doubt about the file (not
//! a zip, another format version, another terraform version, deferred
//! changes, a decoding error) gives `None`, and the caller asks `show -json`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use prost::Message;

/// The plan file format this reader knows.
const FORMAT_VERSION: u64 = 3;

/// `tfplan.Plan`, the fields read here.
#[derive(Clone, PartialEq, Message)]
struct Plan {
    #[prost(uint64, tag = "1")]
    version: u64,
    #[prost(message, repeated, tag = "3")]
    resource_changes: Vec<ResourceInstanceChange>,
    #[prost(string, tag = "14")]
    terraform_version: String,
    #[prost(bool, tag = "20")]
    errored: bool,
    /// Changes deferred to a later plan: not read, only noticed.
    #[prost(bytes = "vec", repeated, tag = "27")]
    deferred_changes: Vec<Vec<u8>>,
}

/// `tfplan.ResourceInstanceChange`.
#[derive(Clone, PartialEq, Message)]
struct ResourceInstanceChange {
    /// The instance address, as `show -json` writes it (`module.m["k"].aws_x.y[0]`).
    #[prost(string, tag = "13")]
    addr: String,
    /// The address before a `moved` block renamed it; empty if none.
    #[prost(string, tag = "14")]
    prev_run_addr: String,
    #[prost(message, optional, tag = "9")]
    change: Option<Change>,
}

/// `tfplan.Change`.
#[derive(Clone, PartialEq, Message)]
struct Change {
    /// `tfplan.Action`: 0 no-op, 1 create, 2 read, 3 update, 5 delete,
    /// 6 delete-then-create, 7 create-then-delete, 8 forget, ...
    #[prost(int32, tag = "1")]
    action: i32,
    /// `tfplan.Importing`, set when an `import` block brings the object in
    /// (a no-op action that still writes a row): not decoded, only noticed.
    #[prost(bytes = "vec", optional, tag = "5")]
    importing: Option<Vec<u8>>,
}

const NOOP: i32 = 0;
const READ: i32 = 2;
const DELETE: i32 = 5;

/// The addresses of the instances the plan at `path` changes (any action
/// but no-op and read, an import, and both addresses of a move), sorted, as [`super::plan::Plan::changed_addresses`]
/// gives them from `show -json`; `None` when the file is not one this
/// reader is sure of (see the module docs). `tf_version` is the version of
/// the terraform that wrote it.
pub fn changed_addresses(path: &Path, tf_version: &str) -> Option<Vec<String>> {
    let file = std::fs::File::open(path).ok()?;
    let mut archive = zip::ZipArchive::new(file).ok()?;
    let mut entry = archive.by_name("tfplan").ok()?;
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).ok()?;
    let plan = Plan::decode(bytes.as_slice()).ok()?;
    from_plan(&plan, tf_version)
}

fn from_plan(plan: &Plan, tf_version: &str) -> Option<Vec<String>> {
    let known = plan.version == FORMAT_VERSION
        && plan.terraform_version == tf_version
        && !plan.errored
        && plan.deferred_changes.is_empty();
    if !known {
        return None;
    }
    let mut changed = BTreeSet::new();
    for rc in &plan.resource_changes {
        if rc.addr.is_empty() {
            return None;
        }
        let action = rc.change.as_ref().map_or(NOOP, |c| c.action);
        let imported = rc.change.as_ref().is_some_and(|c| c.importing.is_some());
        // A destroy plan deletes the data sources too; `show -json` leaves
        // that out (it changes no object), and so does this reader.
        let data = crate::address::parse_instance(&rc.addr)
            .is_ok_and(|i| i.resource.mode == crate::address::Mode::Data);
        if data && action == DELETE {
            continue;
        }
        // A move (a `moved` block) changes the rows of both addresses.
        let moved = !rc.prev_run_addr.is_empty() && rc.prev_run_addr != rc.addr;
        if (action != NOOP && action != READ) || moved || imported {
            changed.insert(rc.addr.clone());
        }
        if moved {
            changed.insert(rc.prev_run_addr.clone());
        }
    }
    Some(changed.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(addr: &str, action: i32) -> ResourceInstanceChange {
        ResourceInstanceChange {
            addr: addr.to_owned(),
            prev_run_addr: String::new(),
            change: Some(Change {
                action,
                importing: None,
            }),
        }
    }

    fn plan(changes: Vec<ResourceInstanceChange>) -> Plan {
        Plan {
            version: 3,
            resource_changes: changes,
            terraform_version: "1.11.4".into(),
            errored: false,
            deferred_changes: Vec::new(),
        }
    }

    #[test]
    fn a_data_source_deleted_by_a_destroy_is_no_change() {
        let p = plan(vec![
            change("data.terraform_remote_state.net", DELETE),
            change("terraform_data.a", DELETE),
        ]);
        assert_eq!(
            from_plan(&p, "1.11.4"),
            Some(vec!["terraform_data.a".to_owned()])
        );
    }

    #[test]
    fn no_op_and_read_are_not_changes() {
        let p = plan(vec![
            change(r#"module.t["b"].terraform_data.x"#, 6),
            change("terraform_data.a", NOOP),
            change("data.terraform_remote_state.r", READ),
            change(r#"module.t["a"].terraform_data.x"#, 3),
            // A deposed object and the current one: one address.
            change(r#"module.t["a"].terraform_data.x"#, 5),
            change("terraform_data.gone", 8),
        ]);
        let bytes = p.encode_to_vec();
        let decoded = Plan::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            from_plan(&decoded, "1.11.4").unwrap(),
            [
                r#"module.t["a"].terraform_data.x"#,
                r#"module.t["b"].terraform_data.x"#,
                "terraform_data.gone",
            ]
        );
    }

    #[test]
    fn a_move_changes_both_addresses() {
        let mut moved = change("terraform_data.a2", NOOP);
        moved.prev_run_addr = "terraform_data.a".to_owned();
        let p = plan(vec![moved, change("terraform_data.b", NOOP)]);
        let decoded = Plan::decode(p.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            from_plan(&decoded, "1.11.4").unwrap(),
            ["terraform_data.a", "terraform_data.a2"]
        );
    }

    #[test]
    fn an_import_is_a_change() {
        // An `import` block plans a no-op that writes a row.
        let mut imported = change("terraform_data.legacy", NOOP);
        imported.change.as_mut().unwrap().importing = Some(b"\n\x08legacy-1".to_vec());
        let p = plan(vec![imported, change("terraform_data.b", NOOP)]);
        let decoded = Plan::decode(p.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            from_plan(&decoded, "1.11.4").unwrap(),
            ["terraform_data.legacy"]
        );
    }

    #[test]
    fn anything_unexpected_is_left_to_show_json() {
        let ok = plan(vec![change("terraform_data.a", 1)]);
        assert!(from_plan(&ok, "1.11.4").is_some());
        assert_eq!(from_plan(&ok, "1.12.0"), None, "another terraform version");
        let mut other = ok.clone();
        other.version = 4;
        assert_eq!(from_plan(&other, "1.11.4"), None, "another format");
        let mut errored = ok.clone();
        errored.errored = true;
        assert_eq!(from_plan(&errored, "1.11.4"), None);
        let mut deferred = ok.clone();
        deferred.deferred_changes.push(vec![1, 2]);
        assert_eq!(from_plan(&deferred, "1.11.4"), None);
        let nameless = plan(vec![change("", 1)]);
        assert_eq!(from_plan(&nameless, "1.11.4"), None);
        assert_eq!(
            changed_addresses(Path::new("/nonexistent.tfplan"), "1.11.4"),
            None
        );
    }
}
