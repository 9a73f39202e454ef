-- stategraph schema, version 9: what terraform commands cost on a state,
-- measured on its runs, so that each plan can choose between one targeted
-- plan and a scoped refresh beside a refresh-less plan by estimated wall
-- time. Per state and set of remote providers (`aws`, `aws,google`): wall
-- seconds of one command refreshing nothing, of such a command with a
-- second one beside it, and per refreshed instance. NULL until measured.
-- Safe to empty at any time (the next runs measure again).
CREATE TABLE terraform_costs (
    state_id       bigint NOT NULL REFERENCES states (id) ON DELETE CASCADE,
    providers      text NOT NULL,
    command_s      float8,
    pair_s         float8,
    per_instance_s float8,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (state_id, providers)
);
