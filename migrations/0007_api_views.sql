-- stategraph schema, version 7: `stategraph_api`, read-only views over the
-- stored states for `stategraph query` (and any SQL client). The views are
-- the documented, stable interface; the tables behind them may change.
--
-- Sensitive values are masked: attribute paths an instance lists in its
-- `sensitive_attributes`, and the values of sensitive outputs, read as
-- "(sensitive value)" unless the session sets `stategraph.show_sensitive`
-- to `on` (what `stategraph query --show-sensitive` does). This keeps
-- secrets off screens and out of logs by default; it is not an access
-- control (a role that can read the tables can read the values).
CREATE SCHEMA stategraph_api;

-- `attrs` with every path of `sensitive` (terraform's
-- [[{"type":"get_attr","value":"password"}], ...] form) replaced by
-- "(sensitive value)", unless the session asks to see them. A path is
-- followed through the {"value": ..., "type": ...} wrapping of dynamic
-- attributes (terraform_data's input); where it cannot be followed
-- further, what it reached is masked whole.
CREATE FUNCTION stategraph_api.mask(attrs jsonb, sensitive jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    steps jsonb;
    step jsonb;
    k text;
    cur jsonb;
    resolved text[];
    result jsonb := attrs;
BEGIN
    IF attrs IS NULL OR sensitive IS NULL OR jsonb_typeof(sensitive) <> 'array'
       OR coalesce(current_setting('stategraph.show_sensitive', true), '') = 'on' THEN
        RETURN attrs;
    END IF;
    FOR steps IN SELECT e FROM jsonb_array_elements(sensitive) e LOOP
        IF jsonb_typeof(steps) <> 'array' THEN
            CONTINUE;
        END IF;
        IF jsonb_array_length(steps) = 0 THEN
            -- An empty path: the whole object is sensitive.
            RETURN to_jsonb('(sensitive value)'::text);
        END IF;
        cur := result;
        resolved := '{}';
        FOR step IN SELECT e FROM jsonb_array_elements(steps) e LOOP
            k := CASE WHEN step->>'type' = 'get_attr' THEN step->>'value'
                      ELSE step->'value'->>'value' END;
            IF k IS NOT NULL AND jsonb_typeof(cur) = 'object'
               AND cur ? 'value' AND cur ? 'type' AND NOT cur ? k
               AND ((jsonb_typeof(cur->'value') = 'object' AND (cur->'value') ? k)
                    OR (k ~ '^[0-9]+$' AND jsonb_typeof(cur->'value') = 'array'
                        AND k::bigint < jsonb_array_length(cur->'value'))) THEN
                -- A dynamic value: its path goes on inside "value".
                resolved := resolved || 'value'::text;
                cur := cur->'value';
            END IF;
            IF k IS NOT NULL AND jsonb_typeof(cur) = 'object' AND cur ? k THEN
                cur := cur->k;
            ELSIF k ~ '^[0-9]+$' AND jsonb_typeof(cur) = 'array'
                  AND k::bigint < jsonb_array_length(cur) THEN
                cur := cur->(k::int);
            ELSE
                EXIT;
            END IF;
            resolved := resolved || k;
        END LOOP;
        IF cardinality(resolved) > 0 THEN
            result := jsonb_set(result, resolved, to_jsonb('(sensitive value)'::text));
        END IF;
    END LOOP;
    RETURN result;
END
$$;

-- A sensitive output's value, masked unless the session asks to see it.
CREATE FUNCTION stategraph_api.mask_output(value jsonb, sensitive boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN sensitive AND coalesce(current_setting('stategraph.show_sensitive', true), '') <> 'on'
        THEN to_jsonb('(sensitive value)'::text)
        ELSE value
    END
$$;

-- One row per stored state.
CREATE VIEW stategraph_api.states AS
SELECT s.name, s.lineage, s.serial, s.terraform_version, s.origin,
       s.created_at, s.updated_at
FROM states s;

-- One row per resource instance object (deposed objects are rows of their
-- own: `deposed` is their key, '' for the current object).
CREATE VIEW stategraph_api.instances AS
SELECT s.name AS state, i.address, i.deposed, i.config_address AS resource,
       i.module, i.mode, i.type, i.name, i.index_key, i.provider, i.status,
       i.schema_version,
       stategraph_api.mask(i.attributes, i.sensitive_attributes) AS attributes,
       i.sensitive_attributes, i.dependencies, i.create_before_destroy,
       i.version, i.txn_id
FROM instances i JOIN states s ON s.id = i.state_id;

-- One row per edge of the graph: `address` depends on `depends_on` (a
-- resource address as terraform records it, module keys removed).
CREATE VIEW stategraph_api.dependencies AS
SELECT s.name AS state, i.address, d.depends_on
FROM instances i
JOIN states s ON s.id = i.state_id
CROSS JOIN LATERAL unnest(i.dependencies) AS d(depends_on)
WHERE i.deposed = '';

-- Root outputs.
CREATE VIEW stategraph_api.outputs AS
SELECT s.name AS state, o.name, stategraph_api.mask_output(o.value, o.sensitive) AS value,
       o.type, o.sensitive, o.version, o.txn_id
FROM outputs o JOIN states s ON s.id = o.state_id;

-- The transaction log: who wrote what, when, from where.
CREATE VIEW stategraph_api.transactions AS
SELECT t.id, s.name AS state, t.kind, t.command, t.status, t.actor_user,
       t.actor_host, t.ci_job, t.git_commit, t.git_branch, t.terraform_version,
       t.started_at, t.finished_at, t.serial_before, t.serial_after,
       t.cone, t.summary
FROM transactions t JOIN states s ON s.id = t.state_id;

-- Every version of every instance object, the current one included: which
-- transaction wrote it (`written_by`), which replaced or removed it
-- (`superseded_by`, NULL for the current version; `removed` when that
-- transaction removed the object). Versions a run replaced itself (its
-- checkpoints mid-apply) were never the state's between transactions and
-- are left out.
CREATE VIEW stategraph_api.history AS
SELECT s.name AS state, h.address, h.deposed, h.version, h.written_by,
       h.superseded_by, h.removed, h.row->>'type' AS type,
       h.row->>'module' AS module, h.row->>'status' AS status,
       stategraph_api.mask(h.row->'attributes', h.row->'sensitive_attributes') AS attributes,
       h.row->'sensitive_attributes' AS sensitive_attributes
FROM instance_history h JOIN states s ON s.id = h.state_id
WHERE h.superseded_by <> h.written_by
UNION ALL
SELECT s.name, i.address, i.deposed, i.version, i.txn_id, NULL, false, i.type,
       i.module, i.status,
       stategraph_api.mask(i.attributes, i.sensitive_attributes),
       i.sensitive_attributes
FROM instances i JOIN states s ON s.id = i.state_id;
