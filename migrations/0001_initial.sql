-- stategraph schema, version 1.
--
-- One row per terraform state (root module + workspace), one row per
-- resource instance object (deposed objects are rows of their own), the
-- dependency graph as data (each instance row holds the resource addresses
-- it depends on, indexed for reverse look-ups), root outputs, an append-only
-- transaction log, per-instance history keyed by transaction, and locks.

CREATE TABLE states (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    lineage           text NOT NULL,
    serial            bigint NOT NULL,
    terraform_version text NOT NULL,
    -- state v4 `check_results` as written (JSON null included); SQL NULL when absent.
    check_results     jsonb,
    -- top-level keys of the state file stategraph does not interpret.
    extra             jsonb,
    -- resources that had no instances (kept so that nothing is lost).
    husks             jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE transactions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state_id          bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    -- what kind of write: push, apply, destroy, import, recover, ...
    kind              text NOT NULL,
    command           text NOT NULL,
    actor_user        text NOT NULL,
    actor_host        text NOT NULL,
    ci_job            text,
    terraform_version text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    status            text NOT NULL CHECK (status IN ('running', 'committed', 'failed', 'aborted')),
    serial_before     bigint,
    serial_after      bigint,
    lineage_before    text,
    lineage_after     text,
    -- {"write": [...], "read": [...]} for plan/apply; NULL for a whole-state push.
    cone              jsonb,
    -- {"added": n, "changed": n, "removed": n, ...}
    summary           jsonb
);
CREATE INDEX transactions_state ON transactions (state_id, id);

CREATE TABLE instances (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state_id              bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    -- full instance address as terraform prints it: module.m[1].aws_subnet.s["a"]
    address               text NOT NULL,
    -- '' for the current object, else the deposed key.
    deposed               text NOT NULL DEFAULT '',
    -- the resource's address in configuration (module keys removed), the form
    -- state v4 `dependencies` use: module.m.aws_subnet.s
    config_address        text NOT NULL,
    module                text NOT NULL DEFAULT '',
    mode                  text NOT NULL,
    type                  text NOT NULL,
    name                  text NOT NULL,
    each                  text,
    provider              text NOT NULL,
    index_key             jsonb,
    status                text,
    schema_version        bigint NOT NULL,
    attributes            jsonb,
    attributes_flat       jsonb,
    sensitive_attributes  jsonb,
    private               text,
    dependencies          text[] NOT NULL DEFAULT '{}',
    create_before_destroy boolean NOT NULL DEFAULT false,
    -- instance keys stategraph does not interpret (e.g. identity), kept verbatim.
    extra                 jsonb,
    -- resource-level keys stategraph does not interpret.
    resource_extra        jsonb,
    version               bigint NOT NULL,
    txn_id                bigint NOT NULL REFERENCES transactions(id),
    UNIQUE (state_id, address, deposed)
);
CREATE INDEX instances_config_address ON instances (state_id, config_address);
CREATE INDEX instances_dependencies ON instances USING gin (dependencies);

-- Every version of an instance that a transaction replaced or removed.
CREATE TABLE instance_history (
    state_id              bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    instance_id           bigint NOT NULL,
    address               text NOT NULL,
    deposed               text NOT NULL,
    version               bigint NOT NULL,
    -- the transaction that wrote this version, and the one that superseded it.
    written_by            bigint NOT NULL REFERENCES transactions(id),
    superseded_by         bigint NOT NULL REFERENCES transactions(id),
    removed               boolean NOT NULL,
    -- the whole row as it was (to_jsonb of the instances row).
    row                   jsonb NOT NULL,
    PRIMARY KEY (state_id, address, deposed, version)
);
CREATE INDEX instance_history_txn ON instance_history (superseded_by);

CREATE TABLE outputs (
    state_id   bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    name       text NOT NULL,
    value      jsonb NOT NULL,
    type       jsonb NOT NULL,
    sensitive  boolean NOT NULL DEFAULT false,
    extra      jsonb,
    version    bigint NOT NULL,
    txn_id     bigint NOT NULL REFERENCES transactions(id),
    PRIMARY KEY (state_id, name)
);

CREATE TABLE output_history (
    state_id      bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    name          text NOT NULL,
    version       bigint NOT NULL,
    written_by    bigint NOT NULL REFERENCES transactions(id),
    superseded_by bigint NOT NULL REFERENCES transactions(id),
    removed       boolean NOT NULL,
    row           jsonb NOT NULL,
    PRIMARY KEY (state_id, name, version)
);

-- Subgraph locks (used by plan/apply): one row per locked address and holder.
CREATE TABLE lock_holders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state_id         bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    txn_id           bigint REFERENCES transactions(id),
    actor_user       text NOT NULL,
    actor_host       text NOT NULL,
    ci_job           text,
    command          text NOT NULL,
    acquired_at      timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL
);

CREATE TABLE locks (
    state_id  bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    address   text NOT NULL,
    mode      text NOT NULL CHECK (mode IN ('shared', 'exclusive')),
    holder_id bigint NOT NULL REFERENCES lock_holders(id) ON DELETE CASCADE,
    PRIMARY KEY (state_id, address, holder_id)
);
CREATE INDEX locks_holder ON locks (holder_id);
