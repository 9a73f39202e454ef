//! Connections as libpq users write them: a unix-socket directory in
//! `PGHOST`, in `host=` of a URL or of a `key=value` string; several hosts,
//! of which `target_session_attrs=read-write` picks the writable one; and a
//! clear message, naming the host and the setting to change, when nothing
//! answers or what answers is not PostgreSQL. And the roles of
//! `sql/roles.sql`: a reader reads, a planner plans, an applier applies.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::time::Duration;

use crate::common::pg::{cluster_port, cluster_socket_dir, start_cluster_with};
use crate::common::slow_chain;
use crate::common::*;

/// `stategraph GLOBAL log` with only `env` for a database; not the embedded one.
fn log_with(global: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = stategraph_without_db();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(global)
        .arg("log")
        .output()
        .expect("run stategraph")
}

/// The run succeeded, and it was in `db` that it did (its schema is there
/// now: the database was empty).
#[track_caller]
fn assert_used(db: &TestDb, what: &str, out: &Output) {
    assert_ok(what, out);
    assert_eq!(
        db.psql("SELECT count(*) > 0 FROM stategraph_migrations"),
        "t",
        "{what}: the schema is not in {}",
        db.name
    );
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn pghost_naming_a_socket_directory_connects_through_the_socket() {
    let db = test_db();
    let socket = cluster_socket_dir().to_string_lossy().into_owned();
    let out = log_with(
        &[],
        &[
            ("PGHOST", socket.clone()),
            ("PGPORT", cluster_port().to_string()),
            ("PGUSER", "postgres".to_owned()),
            ("PGDATABASE", db.name.clone()),
        ],
    );
    assert_used(&db, "PGHOST=<socket dir>", &out);

    // libpq never asks for TLS on a socket, whatever sslmode says.
    let db = test_db();
    let out = log_with(
        &[],
        &[
            ("PGHOST", socket),
            ("PGPORT", cluster_port().to_string()),
            ("PGUSER", "postgres".to_owned()),
            ("PGDATABASE", db.name.clone()),
            ("PGSSLMODE", "require".to_owned()),
        ],
    );
    assert_used(&db, "PGHOST=<socket dir> PGSSLMODE=require", &out);
}

#[test]
fn host_in_a_url_or_a_key_value_string_names_a_socket_directory() {
    let socket = cluster_socket_dir().to_string_lossy().into_owned();
    let port = cluster_port();

    let db = test_db();
    let url = format!("postgres://postgres@/{}?host={socket}&port={port}", db.name);
    let out = log_with(&["--database-url", &url], &[]);
    assert_used(&db, "host=<socket dir> in a URL", &out);

    let db = test_db();
    let encoded = socket.replace('/', "%2F");
    let url = format!("postgresql://postgres@{encoded}:{port}/{}", db.name);
    let out = log_with(&["--database-url", &url], &[]);
    assert_used(&db, "a percent-encoded socket dir as a URL's host", &out);

    let db = test_db();
    let conninfo = format!(
        "host={socket} port={port} user=postgres dbname={} sslmode=prefer",
        db.name
    );
    let out = log_with(&[], &[("STATEGRAPH_DATABASE_URL", conninfo)]);
    assert_used(&db, "host=<socket dir> in a key=value string", &out);

    // What the URL leaves out comes from the libpq variables, as in libpq.
    let db = test_db();
    let url = format!("postgres:///{}?host={socket}", db.name);
    let out = log_with(
        &["--database-url", &url],
        &[
            ("PGPORT", port.to_string()),
            ("PGUSER", "postgres".to_owned()),
        ],
    );
    assert_used(&db, "a URL completed by PGPORT and PGUSER", &out);
}

#[test]
fn several_hosts_connect_to_the_one_that_takes_writes() {
    // A server whose sessions are read-only, as a standby's are.
    let standby = start_cluster_with("default_transaction_read_only = on", &[]);
    let db = test_db();
    let writable = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?options=-c%20default_transaction_read_only%3Doff",
        standby.port
    );
    standby.psql(&writable, &format!("CREATE DATABASE {}", db.name));
    let standby_has_schema = || {
        standby.psql(
            &format!("postgres://postgres@127.0.0.1:{}/{}", standby.port, db.name),
            "SELECT count(*) FROM pg_tables WHERE tablename = 'stategraph_migrations'",
        )
    };
    let (dead, live) = (dead_port(), cluster_port());
    let hosts = format!(
        "127.0.0.1:{dead},127.0.0.1:{},127.0.0.1:{live}",
        standby.port
    );

    // Without target_session_attrs the first server that answers is used:
    // the read-only one, where the schema cannot be made.
    let any = format!("postgres://postgres@{hosts}/{}", db.name);
    let out = log_with(&["--database-url", &any], &[]);
    assert!(
        !out.status.success(),
        "the read-only server took the schema:\n{}",
        text(&out.stderr)
    );

    let url = format!(
        "postgres://postgres@{hosts}/{}?target_session_attrs=read-write",
        db.name
    );
    let out = log_with(&["--database-url", &url], &[]);
    assert_used(&db, "three hosts, target_session_attrs=read-write", &out);
    assert_eq!(standby_has_schema(), "0");

    // The same with the libpq variables (lists in PGHOST and PGPORT).
    let db = test_db();
    let out = log_with(
        &[],
        &[
            ("PGHOST", "127.0.0.1,127.0.0.1,127.0.0.1".to_owned()),
            ("PGPORT", format!("{dead},{},{live}", standby.port)),
            ("PGTARGETSESSIONATTRS", "read-write".to_owned()),
            ("PGUSER", "postgres".to_owned()),
            ("PGDATABASE", db.name.clone()),
        ],
    );
    assert_used(&db, "PGHOST and PGPORT lists, PGTARGETSESSIONATTRS", &out);
}

#[test]
fn a_host_that_never_answers_times_out_naming_connect_timeout() {
    // Connections are queued by the kernel and never answered.
    let silent = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/db?connect_timeout=1");
    // Not a timing check: the limit only turns waiting forever (what it did)
    // into a failure.
    let out = stategraph_without_db()
        .args(["--database-url", &url, "log"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run stategraph");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}"))
            && err.contains("no answer within 1 s")
            && err.contains("connect_timeout")
            && err.contains("PGCONNECT_TIMEOUT"),
        "{err}"
    );
    drop(silent);
}

#[test]
fn something_other_than_postgresql_answering_is_named() {
    // An HTTP server where PostgreSQL was expected (as a proxy would answer).
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            );
            // Half-close and let the client hang up first: closing with
            // its bytes unread would reset the connection before the
            // client reads the answer (seen on a loaded machine).
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = std::io::copy(&mut conn, &mut std::io::sink());
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/db");
    let out = log_with(&["--database-url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}"))
            && err.contains("not a PostgreSQL server")
            && err.contains("Check the host and port"),
        "{err}"
    );
}

#[test]
fn the_shipped_roles_let_each_user_do_what_it_is_for_and_no_more() {
    let owner = test_db();
    let chain = SlowChain::new(&owner);
    // The owner creates the schema and the state.
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());
    let roles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/roles.sql");
    let sql = std::fs::read_to_string(&roles).expect("sql/roles.sql ships with stategraph");
    owner.psql(&sql);
    // A login per role (roles are the cluster's: names of this database).
    let login = |group: &str| {
        let user = format!("{}_{group}", owner.name);
        owner.psql(&format!(
            "CREATE ROLE {user} LOGIN IN ROLE stategraph_{group}"
        ));
        TestDb {
            url: owner
                .url
                .replacen("postgres://postgres@", &format!("postgres://{user}@"), 1),
            name: owner.name.clone(),
        }
    };
    let (reader, planner, applier) = (login("reader"), login("planner"), login("applier"));
    let run = |db: &TestDb, args: &[&str]| {
        sg_tf(db, &chain.wd, slow_chain::STATE, args)
            .env("TMPDIR", &chain.tmp)
            .output()
            .expect("run stategraph")
    };
    let apply_gen2 = ["apply", "-auto-approve", "-no-color", "-var", "gen=2"];
    let refused = |who: &str, out: &Output| {
        let err = text(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("permission denied")
                && err.contains("sql/roles.sql"),
            "{who} was not refused:\n{err}"
        );
        assert_eq!(chain.gen("first"), "1", "{who} changed the state");
        assert_eq!(owner.psql("SELECT count(*) FROM lock_holders"), "0");
    };

    // The reader reads.
    let (list, _) = assert_ok("reader: state list", &run(&reader, &["state", "list"]));
    assert!(list.contains("terraform_data.second"), "{list}");
    let (pulled, _) = assert_ok("reader: state pull", &run(&reader, &["state", "pull"]));
    assert!(pulled.contains("\"lineage\""), "{pulled}");
    let (log, _) = assert_ok("reader: log", &run(&reader, &["log"]));
    assert!(log.contains("apply"), "{log}");
    assert_ok("reader: locks", &run(&reader, &["locks"]));
    let (shown, _) = assert_ok("reader: show", &run(&reader, &["show", "-no-color"]));
    assert!(shown.contains("terraform_data.first"), "{shown}");
    let (queried, _) = assert_ok(
        "reader: query",
        &run(
            &reader,
            &[
                "query",
                "--csv",
                "SELECT count(*) FROM stategraph_api.history h \
               JOIN stategraph_api.transactions t ON t.id = h.written_by \
               WHERE h.address = 'terraform_data.first'",
            ],
        ),
    );
    assert!(
        queried.starts_with("count\n") && queried != "count\n0\n",
        "{queried}"
    );
    refused("the reader", &run(&reader, &apply_gen2));

    // The planner plans, and cannot apply.
    let plan = run(
        &planner,
        &["plan", "-no-color", "-detailed-exitcode", "-var", "gen=2"],
    );
    assert_eq!(
        plan.status.code(),
        Some(2),
        "planner: plan\n{}",
        text(&plan.stderr)
    );
    assert!(text(&plan.stdout).contains("terraform_data.first"));
    refused("the planner", &run(&planner, &apply_gen2));

    // The applier applies.
    assert_ok("applier: apply", &run(&applier, &apply_gen2));
    assert_eq!(chain.gen("first"), "2");
    assert_eq!(chain.gen("second"), "2");
    // And may delete a state with everything that cascades from it
    // (`workspace delete`), here rolled back.
    let deleted = applier.psql(
        "BEGIN; \
         WITH d AS (DELETE FROM states RETURNING id) SELECT count(*) FROM d; \
         ROLLBACK;",
    );
    assert_eq!(deleted, "1", "the applier could not delete the state");
    assert_eq!(owner.psql("SELECT count(*) FROM states"), "1");
}
