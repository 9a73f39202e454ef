-- stategraph schema, version 12: one row per resource (its instances in one
-- module instance), kept by PostgreSQL itself as `instances` is written: how
-- many objects it has, the digest of their digests, and the union of their
-- dependencies. Discovery compares the configuration's baseline with these
-- (a few thousand rows at 100,000 instances) instead of reading one row per
-- instance; a plan that finds nothing to change reads nothing else.
--
-- The digest is that of `provider|mode|each|` followed by the objects' own
-- digests (`instances.digest`) sorted bytewise and joined by newlines
-- (sha256, first 32 hex digits), NULL while any object has no digest;
-- stategraph computes the same from rows it reads (`baseline.rs`).
CREATE TABLE resource_digests (
    state_id       bigint NOT NULL REFERENCES states (id) ON DELETE CASCADE,
    module         text NOT NULL,
    config_address text NOT NULL,
    mode           text NOT NULL DEFAULT '',
    type           text NOT NULL DEFAULT '',
    name           text NOT NULL DEFAULT '',
    provider       text NOT NULL DEFAULT '',
    each           text,
    objects        bigint NOT NULL DEFAULT 0,
    digest         text,
    dependencies   text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (state_id, module, config_address)
);

-- Recomputes the rows of the given resources (state, module, configuration
-- address, as parallel arrays) from `instances`. Writers of one resource
-- take turns: its row is locked first (created where missing), in one
-- order, and only then, in a statement of its own (a snapshot of its own
-- under READ COMMITTED), are the objects read, so that a writer that waited
-- sees the rows of the one it waited for. stategraph's merges lock all the
-- resources they write up front (`resource_digests_lock`), in that order.
CREATE FUNCTION resource_digests_lock(s bigint[], m text[], c text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resource_digests (state_id, module, config_address)
    SELECT g.s, g.m, g.c
    FROM unnest(s, m, c) AS g (s, m, c)
    -- Not for a state being deleted (its rows go with it).
    WHERE EXISTS (SELECT 1 FROM states WHERE id = g.s)
    ORDER BY g.s, g.m COLLATE "C", g.c COLLATE "C"
    ON CONFLICT DO NOTHING;
    PERFORM 1
    FROM resource_digests r, unnest(s, m, c) AS g (s, m, c)
    WHERE r.state_id = g.s AND r.module = g.m AND r.config_address = g.c
    ORDER BY r.state_id, r.module COLLATE "C", r.config_address COLLATE "C"
    FOR UPDATE OF r;
END $$;

CREATE FUNCTION resource_digests_recompute(s bigint[], m text[], c text[]) RETURNS void
LANGUAGE plpgsql
-- One sort of the resources' rows in memory, not on disk (a push of 100,000).
SET work_mem = '64MB'
AS $$
BEGIN
    -- A writer that computes the rows of what it writes itself (stategraph's
    -- push into an empty state) says so for its transaction.
    IF current_setting('stategraph.resource_digests', true) = 'by_writer' THEN
        RETURN;
    END IF;
    PERFORM resource_digests_lock(s, m, c);
    -- One pass over the objects: their count, digest, and their distinct
    -- dependency lists (joined by a separator no address holds), split and
    -- made a set below.
    WITH g AS (
        SELECT DISTINCT g.s, g.m, g.c FROM unnest(s, m, c) AS g (s, m, c)
    ), o AS (
        SELECT g.s, g.m, g.c,
               min(i.mode) AS mode, min(i.type) AS type, min(i.name) AS name,
               min(i.provider) AS provider, min(i.each) AS each, count(*) AS objects,
               CASE WHEN count(i.digest) = count(*) THEN
                   substr(encode(sha256(convert_to(
                       min(i.provider) || '|' || min(i.mode) || '|' || coalesce(min(i.each), '') || '|'
                       || string_agg(i.digest, E'\n' ORDER BY i.digest COLLATE "C"),
                       'UTF8')), 'hex'), 1, 32)
               END AS digest,
               string_agg(DISTINCT array_to_string(i.dependencies, E'\x1f'), E'\x1f') AS deps
        FROM g JOIN instances i
          ON i.state_id = g.s AND i.module COLLATE "C" = g.m AND i.config_address = g.c
        GROUP BY g.s, g.m, g.c
    )
    UPDATE resource_digests r
    SET mode = o.mode, type = o.type, name = o.name, provider = o.provider, each = o.each,
        objects = o.objects, digest = o.digest,
        dependencies = ARRAY(SELECT DISTINCT d FROM unnest(string_to_array(o.deps, E'\x1f')) AS d
                             WHERE d <> '' ORDER BY d)
    FROM o
    WHERE r.state_id = o.s AND r.module = o.m AND r.config_address = o.c;
    -- Resources left without objects.
    DELETE FROM resource_digests r
    USING unnest(s, m, c) AS g (s, m, c)
    WHERE r.state_id = g.s AND r.module = g.m AND r.config_address = g.c
      AND NOT EXISTS (SELECT 1 FROM instances i
                      WHERE i.state_id = g.s AND i.module COLLATE "C" = g.m
                        AND i.config_address = g.c);
END $$;

-- After each statement writing `instances`: the resources whose rows it
-- added, changed or removed.
CREATE FUNCTION resource_digests_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM resource_digests_recompute(array_agg(state_id), array_agg(module), array_agg(config_address))
    FROM (SELECT DISTINCT state_id, module, config_address FROM new_rows) t
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION resource_digests_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM resource_digests_recompute(array_agg(state_id), array_agg(module), array_agg(config_address))
    FROM (SELECT DISTINCT state_id, module, config_address FROM old_rows) t
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION resource_digests_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM resource_digests_recompute(array_agg(state_id), array_agg(module), array_agg(config_address))
    FROM (SELECT state_id, module, config_address FROM new_rows
          UNION
          SELECT state_id, module, config_address FROM old_rows) t
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE TRIGGER resource_digests_insert AFTER INSERT ON instances
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION resource_digests_after_insert();

CREATE TRIGGER resource_digests_delete AFTER DELETE ON instances
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION resource_digests_after_delete();

CREATE TRIGGER resource_digests_update AFTER UPDATE ON instances
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION resource_digests_after_update();

-- The states stored so far.
SELECT resource_digests_recompute(array_agg(state_id), array_agg(module), array_agg(config_address))
FROM (SELECT DISTINCT state_id, module, config_address FROM instances) t
HAVING count(*) > 0;
