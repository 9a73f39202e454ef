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
