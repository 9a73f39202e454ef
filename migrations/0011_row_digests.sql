-- stategraph schema, version 11: each row keeps the digest of its object's
-- content (32 hex digits, computed by stategraph when it writes the row),
-- so that discovery compares the configuration's baseline with the stored
-- rows without reading any row's attributes. Rows written before have
-- none: the first run that reads them whole fills it in.
ALTER TABLE instances ADD COLUMN digest text;
