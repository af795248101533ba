-- The scope of a ScopedProjection, recorded on each of its checkpoints, so
-- that lag read from the database (GetProgress, the operator's status.lag,
-- this view) counts only the events the partition will handle (issue 32):
-- the aggregate types and bounded contexts it reads, NULL for all. The
-- scope lives in the projection's Go code; its processor writes it when it
-- creates the checkpoint and whenever it (re)loads the topology. A
-- checkpoint written by an older processor keeps NULL and counts every
-- event, as before.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS aggregate_types text[];
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS bounded_contexts text[];

-- projection_lag (migration 0011), redefined with the same columns: per
-- partition of each projection's current topology, lag_events counts the
-- events in the partition's recorded scope that hash to it among the first
-- 1000000 events after its checkpoint (so at most 1000000 index entries are
-- examined per partition, whatever the scope; a partition further behind
-- reads "at least"), and oldest_unprocessed_age_seconds is the age of the
-- oldest of them, never below 0 (the database's clock and an event's
-- created_at, set by its writer's transaction, can disagree by a moment).
-- It is lagBeyondSQL of pkg/projection/statements.go spelled out, as
-- GetPartitionLag runs it from the stored checkpoint; GetProgress (and the
-- operator's status.lag) counts the same events, examining the first
-- 1000000 after the furthest-behind partition's checkpoint once for all
-- partitions, so the two agree whenever neither stops at the bound.
CREATE OR REPLACE VIEW projection_lag AS
SELECT t.projection_name,
       k.key                                                                                AS partition_key,
       t.total_partitions,
       t.generation,
       beyond.n                                                                             AS lag_events,
       greatest(0, coalesce(floor(extract(epoch FROM now() - beyond.oldest)), 0))::bigint   AS oldest_unprocessed_age_seconds
FROM projection_topology t
CROSS JOIN LATERAL generate_series(0, t.total_partitions - 1) AS k(key)
LEFT JOIN projection_checkpoints cp
       ON cp.projection_name = t.projection_name AND cp.partition_key = k.key AND cp.generation = t.generation
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE w.mine) AS n, min(w.created_at) FILTER (WHERE w.mine) AS oldest FROM (
        SELECT e.created_at,
               e.partition_hash % t.total_partitions = k.key
               AND (cp.aggregate_types IS NULL OR e.aggregate_type = ANY (cp.aggregate_types))
               AND (cp.bounded_contexts IS NULL OR e.bounded_context = ANY (cp.bounded_contexts)) AS mine
        FROM events e
        WHERE (e.transaction_id, e.global_position) >
              (coalesce(cp.last_transaction_id, '0'), coalesce(cp.last_global_position, 0))
        ORDER BY e.transaction_id, e.global_position
        LIMIT 1000000) AS w) AS beyond;
