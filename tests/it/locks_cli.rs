//! `stategraph locks` and `stategraph force-unlock` through the real binary.

use serde_json::Value;

use crate::common::*;

#[test]
fn locks_lists_holders_and_force_unlock_frees_them() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "chain", &wd.state_path());
    let id = db.psql(
        "WITH h AS (INSERT INTO lock_holders (state_id, actor_user, actor_host, ci_job, command, lease_expires_at)
                    SELECT id, 'alice', 'runner-3', 'job-17', 'stategraph apply', now() + interval '1 hour'
                    FROM states WHERE name = 'chain' RETURNING id, state_id)
         , l AS (INSERT INTO locks (state_id, address, mode, holder_id)
                 SELECT state_id, a, m, id FROM h,
                   (VALUES ('terraform_data.root', 'shared'), ('terraform_data.join', 'exclusive')) v(a, m))
         SELECT id FROM h",
    );

    let list: Value = serde_json::from_str(&sg_ok(&db, &["locks", "--json"])).unwrap();
    let held = list.as_array().unwrap();
    assert_eq!(held.len(), 1, "{list}");
    let text = list.to_string();
    assert!(
        text.contains("alice") && text.contains("terraform_data.join"),
        "{text}"
    );
    let human = sg_ok(&db, &["locks"]);
    assert!(
        human.contains(&id) && human.contains("stategraph apply"),
        "{human}"
    );

    let err = sg_err(&db, &["force-unlock", "999999"]);
    assert!(err.contains("stategraph locks"), "{err}");
    let out = sg_ok(&db, &["force-unlock", "-force", &id]);
    assert!(out.contains("successfully unlocked"), "{out}");
    assert_eq!(db.psql("SELECT count(*) FROM locks"), "0");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}

#[test]
fn var_values_are_redacted_in_locks_conflicts_and_the_log() {
    let db = test_db();
    let chain = SlowChain::new(&db);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());
    // Holds its locks while `second` is replaced (15 s).
    let mut apply = spawn_piped(&mut chain.apply_gen2(&[], 15));
    chain.wait_until_first_is_recorded(&mut apply);

    let redacted = "-var gen=<redacted> -var sleep_seconds=<redacted>";
    let locks = sg_ok(&db, &["locks"]);
    assert!(
        locks.contains(redacted) && !locks.contains("gen=2"),
        "{locks}"
    );
    // Another run that wants the same instances is told who holds them.
    let other = chain
        .sg(&[
            "apply",
            "-auto-approve",
            "-no-color",
            "-lock-timeout=0s",
            "-var",
            "gen=3",
        ])
        .output()
        .unwrap();
    let err = text(&other.stderr);
    assert!(!other.status.success(), "{}\n{err}", text(&other.stdout));
    assert!(
        err.contains("Operation: stategraph apply") && err.contains(redacted),
        "{err}"
    );
    assert!(
        !err.contains("gen=2") && !err.contains("sleep_seconds=15"),
        "{err}"
    );

    let out = apply.wait_with_output().unwrap();
    assert_ok("apply of gen 2", &out);
    let log = sg_ok(&db, &["--state", "slow", "log", "--json"]);
    assert!(
        log.contains(redacted) && !log.contains("gen=2") && !log.contains("gen=3"),
        "{log}"
    );
    assert_eq!(
        chain.gen("second"),
        "2",
        "the apply with redacted -var values was not applied as given"
    );
}
