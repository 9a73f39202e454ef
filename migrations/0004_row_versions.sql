-- stategraph schema, version 4: a row's version is above every version its
-- history holds. A push into a state whose rows had all been removed (a
-- destroy) copied its rows with version 1 while the history already held
-- version 1 of those addresses, and the next write of such a row failed on
-- the history's primary key. Rows written that way move above their history.
UPDATE instances c
SET version = h.max_version + 1
FROM (
    SELECT state_id, address, deposed, max(version) AS max_version
    FROM instance_history
    GROUP BY state_id, address, deposed
) h
WHERE c.state_id = h.state_id
  AND c.address = h.address
  AND c.deposed = h.deposed
  AND c.version <= h.max_version;
