-- stategraph schema, version 6: the lock queue. A run that has to wait for
-- locks takes a ticket, and requests are served first come, first served:
-- no request takes an address that an earlier ticket is waiting for, so a
-- large request is not overtaken forever by a stream of small ones. A
-- ticket has a short lease its waiter renews: the ticket of a waiter that
-- died is removed by the next acquisition once its lease has run out.
-- Waiters are woken by NOTIFY on channel `stategraph_locks` (the state's id
-- as payload) when locks are freed or tickets leave.
CREATE TABLE lock_waiters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state_id         bigint NOT NULL REFERENCES states(id) ON DELETE CASCADE,
    -- what it waits for, sorted, with the mode of each ('shared', 'exclusive')
    addresses        text[] NOT NULL,
    modes            text[] NOT NULL,
    actor_user       text NOT NULL,
    actor_host       text NOT NULL,
    ci_job           text,
    command          text NOT NULL,
    enqueued_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_expires_at timestamptz NOT NULL
);
CREATE INDEX lock_waiters_state ON lock_waiters (state_id, id);
