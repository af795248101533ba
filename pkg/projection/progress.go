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

// LagQuery names the partition [GetPartitionLag] measures.
type LagQuery struct {
	// Projection is the projection's name.
	Projection string
	// PartitionKey is the partition, of the projection's current topology.
	PartitionKey int
	// After is the read position to measure from, such as a running
	// processor's Stats().Position (which can be ahead of the stored
	// checkpoint: an idle partition writes it about once a second). Nil
	// measures from the partition's stored checkpoint of the current
	// generation, as [GetProgress] does.
	After *Position
	// AggregateTypes and BoundedContexts narrow the count to a
	// [ScopedProjection]'s scope; nil or empty counts every event.
	AggregateTypes, BoundedContexts []string
}

// PartitionLag is how far a partition is behind the head of the log.
type PartitionLag struct {
	// Events counts the events after the position that hash to the
	// partition (and lie in the query's scope), up to [LagCountLimit]. As
	// in [PartitionProgress], it counts the events an earlier topology
	// generation applied, which the partition will skip. 0 for a partition
	// outside the topology, or of a projection without one.
	Events int64
	// OldestUnprocessed is when the oldest of those events was appended;
	// zero if there is none.
	OldestUnprocessed time.Time
	// Now is the database server's clock when it counted.
	Now time.Time
}

// Age is how long the oldest unprocessed event has waited: Now minus
// OldestUnprocessed, 0 when caught up.
func (l PartitionLag) Age() time.Duration {
	if l.OldestUnprocessed.IsZero() {
		return 0
	}
	return max(0, l.Now.Sub(l.OldestUnprocessed))
}

// GetPartitionLag measures one partition's lag: what [GetProgress] reports
// for it, optionally from a processor's own position and within a scope.
// It counts up to [LagCountLimit] events through the events'
// (transaction_id, global_position) index, so its cost grows with the lag:
// a caller that measures often (a metrics endpoint) should do it on a
// timer rather than on every request.
func GetPartitionLag(ctx context.Context, db DBTX, q LagQuery) (PartitionLag, error) {
	var (
		l      PartitionLag
		x      *uint64
		p      *int64
		oldest *time.Time
	)
	if q.After != nil {
		x, p = &q.After.TransactionID, &q.After.GlobalPosition
	}
	err := db.QueryRow(ctx, partitionLagSQL, q.Projection, q.PartitionKey, x, p,
		emptyToNil(q.AggregateTypes), emptyToNil(q.BoundedContexts), LagCountLimit).Scan(&l.Now, &l.Events, &oldest)
	if err != nil {
		return PartitionLag{}, noSchema(fmt.Errorf("reading lag of projection %q partition %d: %w", q.Projection, q.PartitionKey, err))
	}
	if oldest != nil {
		l.OldestUnprocessed = *oldest
	}
	return l, nil
}

func emptyToNil(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
