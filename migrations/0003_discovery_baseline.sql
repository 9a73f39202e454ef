-- stategraph schema, version 3: what discovery without terraform compares
-- a configuration against. Per state, one JSON object: for each resource
-- block (`module.m.aws_x.y`) and module call (`module:module.m`), the hash of
-- what its plan depends on in the configuration under which its stored rows
-- were last found converged (planned as no-op, or applied), and a digest of
-- those rows and the rows they depend on. A block whose hash or digest
-- differs is planned; the rest are not. Safe to empty at any time (the next
-- run plans the whole configuration once and fills it again).
CREATE TABLE discovery_baseline (
    state_id   bigint PRIMARY KEY REFERENCES states (id) ON DELETE CASCADE,
    entries    jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
