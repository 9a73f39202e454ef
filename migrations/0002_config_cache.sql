-- stategraph schema, version 2: what stategraph derives from a terraform
-- configuration alone (dependency edges, root outputs and their
-- references), keyed by a fingerprint of the configuration's files and the
-- terraform version, so that runs of an unchanged configuration skip a
-- `terraform show -json`. Safe to empty at any time.
CREATE TABLE config_cache (
    fingerprint text PRIMARY KEY,
    info        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
