-- stategraph schema, version 5: where states and transactions come from.
-- A state records the checkout it was created from (the repository, by its
-- normalized `origin` remote or its directory on a host, and the root
-- module's path in it): a plan or apply from another checkout is refused
-- instead of planning to destroy what that checkout does not declare.
-- NULL for states created before this version: the next apply records it.
ALTER TABLE states ADD COLUMN origin jsonb;
-- The commit and branch of the checkout a transaction ran from, where known.
ALTER TABLE transactions ADD COLUMN git_commit text, ADD COLUMN git_branch text;
