-- Database roles for stategraph: what each kind of user may do with the
-- stored states.
--
--   stategraph_reader   read commands: state list|pull|show, output, show,
--                       log, locks, query, history (and terraform's read-only commands,
--                       which run on a private copy of the state)
--   stategraph_planner  the reader's rights, and plan (-out too): a plan
--                       takes no locks, but clears the locks of runs whose
--                       lease ran out and keeps discovery's caches;
--                       force-unlock; it cannot write a state
--   stategraph_applier  the planner's rights, and every command that writes
--                       a state: apply (a saved plan too), destroy, state
--                       push|mv|rm, import, taint, untaint, refresh,
--                       recover, init -migrate-state, workspace new
--
-- None of them may change the schema: run stategraph once as the owner of
-- the database (or of the schema) to create or migrate it, then run this
-- file as that owner, in that database:
--
--   psql "postgres://owner@db.internal/stategraph" -f sql/roles.sql
--
-- and give each login the role it needs:
--
--   CREATE ROLE ci_plan LOGIN PASSWORD '...' IN ROLE stategraph_planner;
--   GRANT stategraph_applier TO deployer;
--
-- The roles are NOLOGIN groups, created if missing; running the file again
-- (after a stategraph upgrade whose migration added a table) only grants.
-- Tables are named without a schema: run it with the search_path stategraph
-- uses.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stategraph_reader') THEN
        CREATE ROLE stategraph_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stategraph_planner') THEN
        CREATE ROLE stategraph_planner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stategraph_applier') THEN
        CREATE ROLE stategraph_applier NOLOGIN;
    END IF;
END
$$;

GRANT stategraph_reader TO stategraph_planner;
GRANT stategraph_planner TO stategraph_applier;

-- Reading: every table, the schema version included (each run checks it).
GRANT SELECT ON
    stategraph_migrations,
    states,
    transactions,
    instances,
    instance_history,
    outputs,
    output_history,
    lock_holders,
    locks,
    lock_waiters,
    config_cache,
    discovery_baseline,
    terraform_costs,
    resource_digests
TO stategraph_reader;

-- Querying (stategraph query): the documented views of stategraph_api.
GRANT USAGE ON SCHEMA stategraph_api TO stategraph_reader;
GRANT SELECT ON
    stategraph_api.states,
    stategraph_api.instances,
    stategraph_api.dependencies,
    stategraph_api.outputs,
    stategraph_api.transactions,
    stategraph_api.history
TO stategraph_reader;

-- Planning: taking and releasing locks (and clearing those of runs whose
-- lease ran out, marking their transactions aborted), the caches that
-- spare a plan work, and what terraform commands cost (the plan's way).
GRANT INSERT, UPDATE, DELETE ON lock_holders, locks, lock_waiters TO stategraph_planner;
GRANT UPDATE (status, finished_at, summary) ON transactions TO stategraph_planner;
GRANT INSERT, UPDATE ON config_cache, discovery_baseline, terraform_costs TO stategraph_planner;

-- Applying: the states, their instances (and what PostgreSQL keeps of each
-- resource as they are written) and outputs, their history, and the
-- transaction log.
GRANT INSERT, UPDATE, DELETE ON
    states,
    transactions,
    instances,
    resource_digests,
    instance_history,
    outputs,
    output_history
TO stategraph_applier;
