-- projection_lag, as migration 0011 made it, with the age never below 0:
-- now() is the reading transaction's start, and a transaction that began
-- before an append can read the appended event once it has committed
-- (READ COMMITTED), so now() - created_at can be a little negative, which
-- floor made -1. A dashboard or an autoscaler would show an event from
-- the future; 0 is what it means (just appended). Only that column
-- changes.
--
-- projection_lag: each projection's lag, one row per partition of its
-- current topology, for autoscalers that query SQL (KEDA's postgresql
-- scaler) and for dashboards. It counts what GetProgress counts (and the
-- operator's status.lag shows): the events after the partition's checkpoint
-- that hash to it, up to 1000000 (a lag of 1000000 means "at least"), and
-- the age of the oldest of them. A query that names the projection, e.g.
--
--   SELECT coalesce(sum(lag_events), 0) FROM projection_lag WHERE projection_name = 'user_count'
--
-- reads that projection's checkpoints and, per partition, the events after
-- its checkpoint, through the events' (transaction_id, global_position)
-- index: about as costly as the operator's status read. int8eq hides the
-- partition filter from the planner, as in the processor's query, so that
-- the ordered index scan stops at the limit.
--
-- A view runs with its owner's rights: a role granted SELECT on it (see
-- docs/least-privilege.sql, projectionist_metrics) reads the lag without
-- reading the events.
CREATE OR REPLACE VIEW projection_lag AS
SELECT t.projection_name,
       k.key                                                                    AS partition_key,
       t.total_partitions,
       t.generation,
       beyond.n                                                                 AS lag_events,
       greatest(coalesce(floor(extract(epoch FROM now() - beyond.oldest)), 0), 0)::bigint AS oldest_unprocessed_age_seconds
FROM projection_topology t
CROSS JOIN LATERAL generate_series(0, t.total_partitions - 1) AS k(key)
CROSS JOIN LATERAL (
    SELECT coalesce(max(cp.last_transaction_id), '0') AS x, coalesce(max(cp.last_global_position), 0) AS p
    FROM projection_checkpoints cp
    WHERE cp.projection_name = t.projection_name AND cp.partition_key = k.key AND cp.generation = t.generation) AS c
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(rest.created_at) AS oldest FROM (
        SELECT e.created_at FROM events e
        WHERE (e.transaction_id, e.global_position) > (c.x, c.p)
          AND int8eq(e.partition_hash % t.total_partitions, k.key::bigint)
        ORDER BY e.transaction_id, e.global_position
        LIMIT 1000000) AS rest) AS beyond;
