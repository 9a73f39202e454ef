-- stategraph schema, version 8: instances found by their module instance.
-- The change cone is loaded from the rows it reaches instead of the whole
-- state: a dependency binds to the instances of a resource in one module
-- instance (or under one), looked up here by equality or by a prefix range
-- on `module` (bytewise, hence COLLATE "C", whatever the database's own
-- collation), as is a module address given to `stategraph cone`.
CREATE INDEX instances_module ON instances (state_id, module COLLATE "C", config_address);
