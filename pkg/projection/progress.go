package projection

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// LagCountLimit bounds the events [GetProgress] counts per partition, so that
// a partition far behind does not make every status read scan the rest of
// the log. A lag of LagCountLimit means "at least".
const LagCountLimit = 1_000_000

// Progress is how far a projection has got, read from its checkpoints.
type Progress struct {
	// Topology is the projection's current topology; zero if it has none
	// (it never ran and was never given one).
	Topology Topology
	// HeadPosition is the global position of the newest event in the log.
	HeadPosition int64
	// Partitions holds each partition of the current generation, by key.
	Partitions []PartitionProgress
	// Lag is the sum of the partitions' lags.
	Lag int64
	// OldestUnprocessed is when the oldest event some partition has still
	// to pass was appended; zero when every partition is caught up.
	OldestUnprocessed time.Time
	// Now is the database server's clock when it read the progress: the
	// times above are on that clock.
	Now time.Time
}

// PartitionProgress is one partition's checkpoint and what lies beyond it.
type PartitionProgress struct {
	// PartitionKey is the partition.
	PartitionKey int
	// Checkpoint is its stored read position.
	Checkpoint Position
	// Position is the global position of the last event, in read order,
	// at or before the checkpoint: the newest event the partition has
	// passed (handled, skipped, or left to another partition). 0 if none.
	Position int64
	// Lag counts the events after the checkpoint that hash to the
	// partition, up to [LagCountLimit]. It counts events outside a
	// ScopedProjection's scope and events an earlier generation applied,
	// which the partition passes without handling; an idle partition
	// records how far it has looked about once a second, so the lag of a
	// caught-up partition reads 0 within a second or so.
	Lag int64
	// OldestUnprocessed is when the first event after the checkpoint was
	// appended; zero if there is none.
	OldestUnprocessed time.Time
	// UpdatedAt is when the checkpoint was last written; zero if the
	// partition has not run yet.
	UpdatedAt time.Time
}

// progressSQL reads the topology, the head and every partition of the
// current generation with its lag, in one statement and one snapshot. A
// partition that has not run yet has no checkpoint row and starts at the
// beginning of the log. int8eq(a, b) is a = b hidden from the planner, as
// in the processor's query, so that it keeps the ordered index scan that
// stops at the LIMIT.
const progressSQL = `
	SELECT now(), t.generation, t.total_partitions,
	       coalesce((SELECT max(global_position) FROM events), 0),
	       k.key, c.x, c.p, c.updated_at,
	       coalesce(passed.global_position, 0), beyond.n, beyond.oldest
	FROM (SELECT 1) AS one
	LEFT JOIN projection_topology t ON t.projection_name = $1
	LEFT JOIN LATERAL generate_series(0, t.total_partitions - 1) AS k(key) ON true
	LEFT JOIN LATERAL (
		SELECT coalesce(max(cp.last_transaction_id), '0') AS x, coalesce(max(cp.last_global_position), 0) AS p,
		       max(cp.updated_at) AS updated_at
		FROM projection_checkpoints cp
		WHERE cp.projection_name = $1 AND cp.partition_key = k.key AND cp.generation = t.generation) AS c ON true
	LEFT JOIN LATERAL (
		SELECT e.global_position FROM events e
		WHERE (e.transaction_id, e.global_position) <= (c.x, c.p)
		ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1) AS passed ON true
	LEFT JOIN LATERAL (
		SELECT count(*) AS n, min(created_at) AS oldest FROM (
			SELECT e.created_at FROM events e
			WHERE (e.transaction_id, e.global_position) > (c.x, c.p)
			  AND int8eq(e.partition_hash % t.total_partitions, k.key::bigint)
			ORDER BY e.transaction_id, e.global_position
			LIMIT $2) AS rest) AS beyond ON k.key IS NOT NULL
	ORDER BY k.key`

// GetProgress reads a projection's progress: its topology, each
// partition's checkpoint and lag, and the head of the log. A projection
// without a topology has a zero Topology and no partitions.
func GetProgress(ctx context.Context, db DBTX, projection string) (Progress, error) {
	var p Progress
	rows, err := db.Query(ctx, progressSQL, projection, LagCountLimit)
	if err != nil {
		return p, noSchema(fmt.Errorf("reading progress of projection %q: %w", projection, err))
	}
	var (
		gen, lag        *int64
		total, key      *int32
		txid            *uint64
		gpos            *int64
		updated, oldest *time.Time
		passed          int64
	)
	_, err = pgx.ForEachRow(rows, []any{&p.Now, &gen, &total, &p.HeadPosition, &key, &txid, &gpos, &updated, &passed, &lag, &oldest}, func() error {
		if gen == nil {
			return nil
		}
		p.Topology = Topology{Projection: projection, Generation: *gen, TotalPartitions: int(*total)}
		if key == nil {
			return nil
		}
		pp := PartitionProgress{PartitionKey: int(*key), Checkpoint: Position{TransactionID: *txid, GlobalPosition: *gpos},
			Position: passed}
		if updated != nil {
			pp.UpdatedAt = *updated
		}
		if lag != nil {
			pp.Lag = *lag
		}
		if oldest != nil {
			pp.OldestUnprocessed = *oldest
			if p.OldestUnprocessed.IsZero() || oldest.Before(p.OldestUnprocessed) {
				p.OldestUnprocessed = *oldest
			}
		}
		p.Lag += pp.Lag
		p.Partitions = append(p.Partitions, pp)
		return nil
	})
	if err != nil {
		return Progress{}, noSchema(fmt.Errorf("reading progress of projection %q: %w", projection, err))
	}
	return p, nil
}
