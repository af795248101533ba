-- Topology: how many partitions a projection runs with, and the frontier of
-- earlier generations, so that changing the partition count applies every
-- event exactly once (DESIGN.md rule 4; pkg/projection/topology.go).

-- One row per projection. Every batch holds it FOR SHARE; a switch takes it
-- FOR UPDATE, so it waits for batches in flight and fences later ones of the
-- old generation.
CREATE TABLE IF NOT EXISTS projection_topology (
    projection_name  text        PRIMARY KEY,
    generation       bigint      NOT NULL CHECK (generation > 0),
    total_partitions integer     NOT NULL CHECK (total_partitions > 0),
    -- events handled by earlier generations: a switch replaces the
    -- checkpoint rows, and carries their events_processed forward here.
    events_processed_before bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The final checkpoint vector of each earlier generation still needed: an
-- event at or before frontier[g][owner of its aggregate under g's count]
-- was applied by generation g and is skipped.
CREATE TABLE IF NOT EXISTS projection_frontier (
    projection_name      text    NOT NULL,
    generation           bigint  NOT NULL,
    total_partitions     integer NOT NULL CHECK (total_partitions > 0),
    partition_key        integer NOT NULL CHECK (partition_key >= 0 AND partition_key < total_partitions),
    last_transaction_id  xid8    NOT NULL,
    last_global_position bigint  NOT NULL,
    PRIMARY KEY (projection_name, generation, partition_key)
);

ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 1;

-- Checkpoints written before topologies existed belong to generation 1.
INSERT INTO projection_topology (projection_name, generation, total_partitions)
SELECT projection_name, 1, max(total_partitions)
FROM projection_checkpoints
GROUP BY projection_name
ON CONFLICT (projection_name) DO NOTHING;
