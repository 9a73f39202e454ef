//! Which way the plan of the cone refreshes, chosen per run by its
//! estimated wall time: one targeted `terraform plan` (refreshing the
//! written instances and every instance of what they read), or the scoped
//! refresh of the written instances beside (or before) a refresh-less plan:
//! two terraform commands, each starting the providers.
//!
//! Pure: the figures it reasons with ([`Costs`]) are measured on this
//! state's earlier runs and stored by [`crate::engine::refresh`]; nothing
//! here runs terraform or reads the database.

/// Refreshing this many remote instances costs about one more terraform
/// command, where the per-instance cost is not measured yet: aws on moto,
/// 2 cores, 15.6 s per command with nothing to do, 0.041 s per instance
/// refreshed by terraform's full plan of 2,847 (BENCHMARKS.md).
const PRIOR_INSTANCES_PER_COMMAND: f64 = 400.0;

/// Cores one provider-loading command keeps busy, where two commands side
/// by side were not measured yet: 18.6 s of CPU in 15.6 s of wall for aws.
const PRIOR_CORES_PER_COMMAND: f64 = 1.2;

/// Wall seconds of one terraform command with nothing to refresh, where
/// none was measured yet: about what the aws provider's start-up costs
/// (7 s on a fast machine, 15.6 s on the bench machine). Only the step line
/// shows it: the choice depends on ratios, which the other priors give.
const PRIOR_COMMAND_S: f64 = 10.0;

/// How much a new measurement weighs against the stored figure: recent
/// runs count most (the machine's load and the provider's version change).
const WEIGHT: f64 = 0.5;

/// What terraform commands cost on this state, measured on its earlier
/// runs (per set of providers): each figure `None` until measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Costs {
    /// Wall seconds of one command refreshing nothing, alone.
    pub command_s: Option<f64>,
    /// Wall seconds of a command refreshing nothing while a second one runs
    /// beside it (both start their providers on the same cores).
    pub pair_s: Option<f64>,
    /// Wall seconds added per remote instance refreshed.
    pub per_instance_s: Option<f64>,
}

/// What is known before the run about the two ways.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    /// Remote instances (not `terraform_data`) one targeted plan refreshes:
    /// the written ones and every instance of the resources they read.
    pub targeted: usize,
    /// Remote instances the scoped refresh refreshes: the written ones.
    pub written: usize,
    /// Cores this process may use.
    pub cores: usize,
    /// Whether the scoped refresh may run beside the plan (else one after
    /// the other).
    pub side_by_side: bool,
    /// What was measured on this state.
    pub costs: Costs,
}

/// The way chosen, with both estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Whether the scoped refresh (two commands) is chosen.
    pub scoped: bool,
    /// Estimated wall seconds of one targeted plan.
    pub one_s: f64,
    /// Estimated wall seconds of the scoped refresh and the refresh-less plan.
    pub two_s: f64,
    /// Whether the figures come from this state's runs (else from priors).
    pub measured: bool,
}

impl Costs {
    /// One command's wall seconds, measured or prior.
    fn command(&self) -> f64 {
        self.command_s.unwrap_or(PRIOR_COMMAND_S)
    }

    /// Seconds per refreshed remote instance, measured or in proportion to
    /// the command's cost.
    fn per_instance(&self) -> f64 {
        self.per_instance_s
            .unwrap_or(self.command() / PRIOR_INSTANCES_PER_COMMAND)
    }

    /// Two commands refreshing nothing, side by side on `cores` cores: as
    /// measured, else each as long as alone where the cores suffice, longer
    /// in proportion where they do not.
    fn pair(&self, cores: usize) -> f64 {
        self.pair_s.unwrap_or_else(|| {
            let busy = 2.0 * PRIOR_CORES_PER_COMMAND / cores.max(1) as f64;
            self.command() * busy.max(1.0)
        })
    }

    /// The figures after one targeted plan that refreshed `refreshed`
    /// remote instances in `wall` seconds: the command's own cost is what
    /// is left after the refresh.
    pub fn after_one(self, refreshed: usize, wall: f64) -> Costs {
        let n = refreshed as f64;
        let command = match self.per_instance_s {
            Some(p) => wall - p * n,
            None => wall / (1.0 + n / PRIOR_INSTANCES_PER_COMMAND),
        };
        // A refresh cheaper than measured leaves at least half to start-up.
        let command = command.max(wall / 2.0);
        Costs {
            command_s: Some(blend(self.command_s, command)),
            ..self
        }
    }

    /// The figures after the scoped refresh of `refreshed` remote instances
    /// (`refresh_wall` seconds) beside (`side_by_side`) or before a
    /// refresh-less plan (`plan_wall` seconds).
    pub fn after_two(
        self,
        refreshed: usize,
        refresh_wall: f64,
        plan_wall: f64,
        side_by_side: bool,
    ) -> Costs {
        let mut next = self;
        if side_by_side {
            // The two overlap: their difference says little about the
            // refresh (the plan of the cone has work of its own).
            next.pair_s = Some(blend(self.pair_s, plan_wall));
            return next;
        }
        next.command_s = Some(blend(self.command_s, plan_wall));
        // Too few instances say more about noise than about refreshing.
        if refreshed >= 5 {
            let p = (refresh_wall - plan_wall).max(0.0) / refreshed as f64;
            next.per_instance_s = Some(blend(self.per_instance_s, p));
        }
        next
    }
}

fn blend(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(old) => old * (1.0 - WEIGHT) + new * WEIGHT,
        None => new,
    }
}

/// The cheaper way for `i`: one targeted plan costs a command and its
/// refresh of every targeted instance; the scoped refresh costs a command
/// and its refresh of the written instances, plus a second command beside
/// it (sharing the cores) or after it. Scoped only when it saves
/// refreshing something and is estimated faster.
pub fn choose(i: &Inputs) -> Choice {
    let c = &i.costs;
    let p = c.per_instance();
    let one_s = c.command() + p * i.targeted as f64;
    let commands = match i.side_by_side {
        true => c.pair(i.cores),
        false => 2.0 * c.command(),
    };
    let two_s = commands + p * i.written as f64;
    Choice {
        scoped: i.targeted > i.written && two_s < one_s,
        one_s,
        two_s,
        measured: c.command_s.is_some() || c.pair_s.is_some(),
    }
}

impl Choice {
    /// Why, in a few words, for the step line.
    pub fn reason(&self, i: &Inputs) -> String {
        let cores = match i.cores {
            1 => "1 core".to_owned(),
            n => format!("{n} cores"),
        };
        let how = match self.measured {
            true => "measured on this state",
            false => "not measured on this state yet",
        };
        let one = format!(
            "one targeted plan refreshing {}: ~{:.0} s",
            i.targeted, self.one_s
        );
        let two = format!(
            "the {} written alone {} a plan: ~{:.0} s",
            i.written,
            if i.side_by_side { "beside" } else { "before" },
            self.two_s
        );
        match self.scoped {
            true => format!("{two}, against {one} ({cores}, {how})"),
            false => format!("{one}, against {two} ({cores}, {how})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(targeted: usize, written: usize, cores: usize, costs: Costs) -> Inputs {
        Inputs {
            targeted,
            written,
            cores,
            side_by_side: true,
            costs,
        }
    }

    /// The aws figures of the bench machine: 15.6 s per command alone,
    /// 19.7 s each for two side by side, 0.041 s per refreshed instance.
    const AWS_HERE: Costs = Costs {
        command_s: Some(15.6),
        pair_s: Some(19.7),
        per_instance_s: Some(0.041),
    };

    #[test]
    fn a_small_state_on_two_cores_plans_in_one_command() {
        // N = 100: the targeted plan refreshes 66, the scoped refresh 34.
        let c = choose(&inputs(66, 34, 2, AWS_HERE));
        assert!(!c.scoped, "{c:?}");
        assert!(c.one_s < c.two_s);
    }

    #[test]
    fn a_large_saving_pays_for_the_second_command() {
        // N = 2,847: 88 written of a targeted refresh of 2,000.
        let c = choose(&inputs(2_000, 88, 2, AWS_HERE));
        assert!(c.scoped, "{c:?}");
        // The break-even: (19.7 - 15.6) / 0.041 = 100 instances saved.
        assert!(!choose(&inputs(130, 34, 2, AWS_HERE)).scoped);
        assert!(choose(&inputs(140, 34, 2, AWS_HERE)).scoped);
    }

    #[test]
    fn cores_enough_for_both_commands_make_the_second_one_cheap() {
        // Not measured: two commands side by side cost 1.2x one on 2 cores,
        // as much as one on 4.
        let unmeasured = Costs::default();
        assert!(!choose(&inputs(66, 34, 2, unmeasured)).scoped);
        assert!(choose(&inputs(66, 34, 4, unmeasured)).scoped);
        assert!(!choose(&inputs(66, 34, 1, unmeasured)).scoped);
        // On 2 cores the prior break-even is 0.2 commands: 80 instances.
        assert!(!choose(&inputs(110, 34, 2, unmeasured)).scoped);
        assert!(choose(&inputs(120, 34, 2, unmeasured)).scoped);
    }

    #[test]
    fn one_after_the_other_the_scoped_refresh_must_save_a_whole_command() {
        let mut i = inputs(300, 34, 8, AWS_HERE);
        i.side_by_side = false;
        // 266 saved x 0.041 s = 10.9 s < 15.6 s: one command.
        assert!(!choose(&i).scoped);
        i.targeted = 500;
        assert!(choose(&i).scoped);
    }

    #[test]
    fn nothing_saved_is_never_scoped() {
        // Equal counts: even free commands save nothing.
        let free = Costs {
            command_s: Some(1.0),
            pair_s: Some(0.5),
            per_instance_s: Some(0.1),
        };
        assert!(!choose(&inputs(34, 34, 64, free)).scoped);
        assert!(!choose(&inputs(0, 0, 64, free)).scoped);
    }

    fn close(got: Option<f64>, want: f64) {
        let got = got.expect("a figure");
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
    }

    #[test]
    fn measurements_move_the_figures_halfway() {
        let first = Costs::default().after_one(100, 20.0);
        // Prior: 100 instances cost a quarter of a command.
        close(first.command_s, 16.0);
        let next = first.after_one(100, 24.0);
        close(next.command_s, (16.0 + 19.2) / 2.0);
        // Side by side: the plan's wall is the pair's.
        let two = next.after_two(10, 22.0, 21.0, true);
        close(two.pair_s, 21.0);
        assert_eq!(two.per_instance_s, None);
        close(two.command_s, 17.6);
        // One after the other: the plan alone is one command, the refresh's
        // excess over it the per-instance cost.
        let seq = two.after_two(10, 18.0, 16.0, false);
        close(seq.command_s, 16.8);
        close(seq.per_instance_s, 0.2);
        let seq = seq.after_two(10, 17.0, 16.0, false);
        close(seq.per_instance_s, 0.15);
        close(seq.command_s, 16.4);
        // Too few refreshed to measure the per-instance cost.
        close(seq.after_two(2, 30.0, 16.0, false).per_instance_s, 0.15);
        // A measured per-instance cost is taken off the plan's wall.
        close(seq.after_one(40, 23.0).command_s, (16.4 + 17.0) / 2.0);
        // A refresh faster than measured leaves half the wall to start-up.
        close(Costs::default().after_one(10_000, 20.0).command_s, 10.0);
    }

    #[test]
    fn the_reason_names_both_estimates_and_the_cores() {
        let i = inputs(66, 34, 2, AWS_HERE);
        let c = choose(&i);
        assert_eq!(
            c.reason(&i),
            "one targeted plan refreshing 66: ~18 s, against the 34 written alone \
             beside a plan: ~21 s (2 cores, measured on this state)"
        );
    }
}
