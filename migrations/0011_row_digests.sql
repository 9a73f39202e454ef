-- stategraph schema, version 11: each row keeps the digest of its object's
-- content (32 hex digits, computed by stategraph when it writes the row),
-- so that discovery compares the configuration's baseline with the stored
-- rows without reading any row's attributes. Rows written before have
-- none: the first run that reads them whole fills it in.
ALTER TABLE instances ADD COLUMN digest text;

-- A write that changes a row's content without giving its new digest (by
-- hand, or a tool that does not know the column) clears the digest, so
-- that no stale digest hides the change from discovery: the next run reads
-- that row whole and fills it in again.
CREATE FUNCTION instances_digest_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.digest := NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER instances_digest_guard BEFORE UPDATE ON instances FOR EACH ROW
WHEN (NEW.digest IS NOT DISTINCT FROM OLD.digest AND OLD.digest IS NOT NULL
      AND ROW(NEW.index_key, NEW.status, NEW.schema_version, NEW.attributes,
              NEW.attributes_flat, NEW.sensitive_attributes, NEW.private,
              NEW.dependencies, NEW.create_before_destroy, NEW.extra)
          IS DISTINCT FROM
          ROW(OLD.index_key, OLD.status, OLD.schema_version, OLD.attributes,
              OLD.attributes_flat, OLD.sensitive_attributes, OLD.private,
              OLD.dependencies, OLD.create_before_destroy, OLD.extra))
EXECUTE FUNCTION instances_digest_guard();
