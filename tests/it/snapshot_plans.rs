//! Plans take no locks: they read a snapshot. A plan started while an apply
//! changes its rows finishes without waiting and reads them as before that
//! change (saying so), and its saved plan is stale once that apply commits;
//! an apply started while a plan runs does not wait for the plan.

use std::time::{Duration, Instant};

use crate::common::gate::{gated_workdir, Gate};
use crate::common::slow_chain::{assert_no_changes, SlowChain};
use crate::common::*;

#[test]
fn a_plan_during_an_apply_of_its_rows_does_not_wait_and_reads_them_as_before() {
    let db = test_db();
    let chain = SlowChain::new(&db);
    assert_ok("apply at gen 1", &chain.apply_gen1().output().unwrap());

    // The apply to gen 2 holds `first` and `second` exclusively; `first`
    // is already written by a checkpoint, `second` is being replaced.
    let mut apply = spawn_quiet(&mut chain.apply_gen2(&[], 20));
    chain.wait_until_first_is_recorded(&mut apply);

    let plan = chain
        .sg(&[
            "plan",
            "-detailed-exitcode",
            "-no-color",
            "-var",
            "gen=2",
            "-out=during.plan",
        ])
        .output()
        .unwrap();
    assert_running(
        &mut apply,
        "the apply ended before the plan did: the plan waited for it",
    );
    let (stdout, stderr) = (text(&plan.stdout), text(&plan.stderr));
    assert_eq!(
        plan.status.code(),
        Some(2),
        "a plan at gen 2 read as before the apply has changes:\n{stdout}{stderr}"
    );
    assert!(
        stderr.contains(
            "terraform_data.first, terraform_data.second are being changed by transaction"
        ) && stderr.contains("this plan reads them as before that change"),
        "the plan does not say which rows an apply is changing:\n{stderr}"
    );
    // `first` as before the apply's checkpoint: gen 1, so it is updated.
    assert!(
        stdout.contains("terraform_data.first will be updated in-place"),
        "the plan did not read `first` as before the apply:\n{stdout}"
    );

    let applied = apply.wait_with_output().unwrap();
    assert_ok("apply at gen 2", &applied);
    assert_no_changes(&chain.plan_gen2().output().unwrap());

    // What the saved plan read has changed since: it is stale.
    let stale = chain
        .sg(&["apply", "-no-color", "during.plan"])
        .output()
        .unwrap();
    let stale_err = text(&stale.stderr);
    assert_eq!(
        stale.status.code(),
        Some(1),
        "a stale plan was applied:\n{stale_err}"
    );
    assert!(
        stale_err.contains("terraform_data.first"),
        "the refusal does not name the changed row:\n{stale_err}"
    );
    assert_eq!(chain.gen("first"), "2");
}

#[test]
fn an_apply_during_a_plan_of_its_rows_does_not_wait_for_the_plan() {
    let db = test_db();
    let gate = Gate::start();
    let wd = gated_workdir();
    let (fast, hold) = (gate.var("fast"), gate.var("hold"));
    let apply = |gen: usize| {
        let gen = format!("gen={gen}");
        sg_in(
            &db,
            &wd,
            "gated",
            &[
                "apply",
                "-auto-approve",
                "-no-color",
                "-var",
                &fast,
                "-var",
                &gen,
            ],
        )
    };
    assert_ok("first apply", &apply(1));

    // The plan stops each time it reads the gate; every time, an apply of
    // the same resource runs to the end before the plan goes on.
    let mut plan = spawn_piped(&mut sg_tf(
        &db,
        &wd,
        "gated",
        &["plan", "-no-color", "-var", &hold, "-var", "gen=planned"],
    ));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut applied = 1;
    while plan.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the plan did not finish");
        if gate.held.recv_timeout(Duration::from_millis(100)).is_err() {
            continue;
        }
        applied += 1;
        let out = apply(applied);
        assert_ok(&format!("apply {applied}, during the plan"), &out);
        assert!(
            !text(&out.stderr).contains("Waiting for"),
            "apply {applied} waited for the plan:\n{}",
            text(&out.stderr)
        );
        assert_running(&mut plan, "the plan ended while its data source was held");
        gate.release.send(()).unwrap();
    }
    assert!(
        applied > 1,
        "the plan never read the gate: nothing was tested"
    );
    let planned = plan.wait_with_output().unwrap();
    assert_ok("the plan", &planned);
    assert!(
        text(&planned.stdout).contains("terraform_data.x will be updated in-place"),
        "{}",
        text(&planned.stdout)
    );
    assert_eq!(input_gen(&db, "terraform_data.x"), applied.to_string());
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}
