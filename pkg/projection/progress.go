package projection

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// LagCountLimit bounds the events a lag reading examines: [GetProgress]
// walks at most this many events after its furthest-behind partition's
// checkpoint, once for all partitions, and [GetPartitionLag] as many after
// the position it measures from, so that a projection far behind (or a
// scope that matches few events) does not make every status read scan the
// rest of the log. A count that stopped there reads "at least"
// ([Progress.LagAtLeast], [PartitionLag.AtLeast]).
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
	// LagAtLeast is true when the reading stopped counting at
	// [LagCountLimit] events after the furthest-behind partition's
	// checkpoint: every partition's Lag, and Lag, are then lower bounds,
	// and [Progress.PassedHead] is false.
	LagAtLeast bool
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
	// partition and lie in its scope: the aggregate types and bounded
	// contexts of a [ScopedProjection], which its processor records on the
	// checkpoint (a partition that has not run yet, or ran with a library
	// older than that, counts every event). Events outside the scope are
	// not counted, so a scoped partition reads 0 as soon as it has handled
	// its last event, however many others are appended. It counts the
	// events an earlier generation applied, which the partition passes
	// without handling. See [LagCountLimit] for its bound.
	Lag int64
	// LowestPending is the lowest global position among the events Lag
	// counts; 0 when there is none. The partition has passed every event
	// of its scope at or below a position h when LowestPending is 0 or
	// above h ([Progress.PassedHead]).
	LowestPending int64
	// OldestUnprocessed is when the first event after the checkpoint was
	// appended; zero if there is none.
	OldestUnprocessed time.Time
	// UpdatedAt is when the checkpoint was last written; zero if the
	// partition has not run yet.
	UpdatedAt time.Time
}

// PassedHead reports whether, at this reading, every partition of the
// topology had passed every event in its scope at or below global position
// head: caught up with the log as it was when the head was head, though
// events appended since may still wait. With the HeadPosition of an earlier
// reading it says "has passed what was there then", which a projection
// keeping up with a steady stream of appends reaches even though its lag
// seldom reads 0 (the operator's CaughtUp and Rebuilt: the head of its
// previous reading). False without a topology, or when the reading stopped
// at [LagCountLimit].
func (p Progress) PassedHead(head int64) bool {
	n := p.Topology.TotalPartitions
	if n == 0 || len(p.Partitions) != n || p.LagAtLeast {
		return false
	}
	for _, pp := range p.Partitions {
		if pp.LowestPending != 0 && pp.LowestPending <= head {
			return false
		}
	}
	return true
}

// GetProgress reads a projection's progress: its topology, each
// partition's checkpoint and lag, and the head of the log. A projection
// without a topology has a zero Topology and no partitions. Its cost is
// bounded by [LagCountLimit] index entries, whatever the partition count.
func GetProgress(ctx context.Context, db DBTX, projection string) (Progress, error) {
	return getProgress(ctx, db, projection, LagCountLimit)
}

// getProgress is GetProgress examining at most limit events.
func getProgress(ctx context.Context, db DBTX, projection string, limit int) (Progress, error) {
	var p Progress
	rows, err := db.Query(ctx, progressSQL, projection, limit)
	if err != nil {
		return p, noSchema(fmt.Errorf("reading progress of projection %q: %w", projection, err))
	}
	var (
		gen             *int64
		total, key      *int32
		txid            *uint64
		gpos            *int64
		updated, oldest *time.Time
		passed, lag     int64
		lowest          int64
		atLeast         bool
	)
	_, err = pgx.ForEachRow(rows, []any{&p.Now, &gen, &total, &p.HeadPosition, &key, &txid, &gpos, &updated,
		&passed, &lag, &oldest, &lowest, &atLeast}, func() error {
		if gen == nil {
			return nil
		}
		p.Topology = Topology{Projection: projection, Generation: *gen, TotalPartitions: int(*total)}
		if key == nil {
			return nil
		}
		pp := PartitionProgress{PartitionKey: int(*key), Checkpoint: Position{TransactionID: *txid, GlobalPosition: *gpos},
			Position: passed, Lag: lag, LowestPending: lowest}
		if updated != nil {
			pp.UpdatedAt = *updated
		}
		if oldest != nil {
			pp.OldestUnprocessed = *oldest
			if p.OldestUnprocessed.IsZero() || oldest.Before(p.OldestUnprocessed) {
				p.OldestUnprocessed = *oldest
			}
		}
		p.Lag += pp.Lag
		p.LagAtLeast = p.LagAtLeast || atLeast
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
	// partition and lie in the query's scope, among the first
	// [LagCountLimit] after the position. As in [PartitionProgress], it
	// counts the events an earlier topology generation applied, which the
	// partition will skip. 0 for a partition outside the topology, or of a
	// projection without one.
	Events int64
	// AtLeast is true when the count stopped at [LagCountLimit] events
	// examined: Events is then a lower bound.
	AtLeast bool
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
// It examines up to [LagCountLimit] events through the events'
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
		emptyToNil(q.AggregateTypes), emptyToNil(q.BoundedContexts), LagCountLimit).Scan(&l.Now, &l.Events, &oldest, &l.AtLeast)
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
