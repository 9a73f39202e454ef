-- stategraph schema, version 10: each state's count of its current instances
-- (deposed objects aside), so that `stategraph cone` says "N of M
-- instances" without counting M rows (an index-only scan of 100,000
-- entries takes 20 ms, most of a small cone's time). Every write of
-- `instances` (a push, a merge) moves it in the same transaction, by the
-- rows it added and removed.
ALTER TABLE states ADD COLUMN instance_count bigint NOT NULL DEFAULT 0;

UPDATE states s
SET instance_count = (SELECT count(*) FROM instances i WHERE i.state_id = s.id AND i.deposed = '');
