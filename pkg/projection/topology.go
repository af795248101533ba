package projection

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Topology is a projection's partition count and its generation, which
// grows by one with every change of the count.
type Topology struct {
	// Projection is the projection's name.
	Projection string
	// Generation numbers the topology; 1 is the first.
	Generation int64
	// TotalPartitions is the partition count of this generation.
	TotalPartitions int
}

// ErrNoTopology is returned by [GetTopology] for a projection that has
// never run and was never given a topology.
var ErrNoTopology = errors.New("projection has no topology")

// GetTopology returns a projection's current topology, or [ErrNoTopology].
func GetTopology(ctx context.Context, db DBTX, projection string) (Topology, error) {
	t := Topology{Projection: projection}
	var n int32
	err := db.QueryRow(ctx, "SELECT generation, total_partitions FROM projection_topology WHERE projection_name = $1", projection).Scan(&t.Generation, &n)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("projection %q: %w", projection, ErrNoTopology)
	}
	if err != nil {
		return t, noSchema(fmt.Errorf("reading topology of projection %q: %w", projection, err))
	}
	t.TotalPartitions = int(n)
	return t, nil
}

// SetTopology sets a projection's partition count to n, exactly: no event
// is skipped or applied twice across the change, whatever the old and new
// counts, however far apart the old partitions' checkpoints are. It is
// idempotent: with n unchanged it does nothing. Running processors pick up
// the new generation on their next batch, without restarting.
//
// The switch is one transaction. It locks the topology row FOR UPDATE;
// every batch holds that row FOR SHARE, so the switch waits for batches in
// flight and every later batch sees the new generation. It then records the
// old generation's final checkpoint vector c[0..N-1] in the frontier,
// starts every new partition at min(c), and bumps the generation. A
// partition of the new generation skips an event of aggregate a at
// position p if some frontier entry (Ni, ci) has p <= ci[owner of a among
// Ni partitions], because generation i applied it, and applies every other
// event. Frontier entries are dropped once every live checkpoint has passed
// their highest position.
//
// Worked example: 2 -> 3 partitions with p0 at position 1000 and p1 at 500.
// Reusing the old checkpoints would skip events 501..1000 of the aggregates
// that move from p1 to p0. Instead the three new partitions start at 500;
// an aggregate that was in p0 skips events up to 1000 (p0 applied them),
// one that was in p1 skips up to 500, and everything else is applied.
func SetTopology(ctx context.Context, db DBTX, projection string, n int) (Topology, error) {
	if projection == "" {
		return Topology{}, fmt.Errorf("%w: projection name is empty", ErrInvalidConfig)
	}
	if n < 1 || n > MaxPartitions {
		return Topology{}, fmt.Errorf("%w: projection %q: partition count %d must be between 1 and %d", ErrInvalidConfig, projection, n, MaxPartitions)
	}
	var t Topology
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		t, err = setTopology(ctx, tx, projection, n)
		return err
	})
	if err != nil {
		return Topology{}, noSchema(fmt.Errorf("setting topology of projection %q to %s: %w", projection, partitions(n), err))
	}
	return t, nil
}

// MaxPartitions bounds a projection's partition count.
const MaxPartitions = 1024

func setTopology(ctx context.Context, tx pgx.Tx, projection string, n int) (Topology, error) {
	t := Topology{Projection: projection}
	// Nothing to do is the common case (every standalone worker calls this
	// at start): answer it without the FOR UPDATE lock, which would queue
	// behind, and could be starved by, the batches' FOR SHARE.
	var current int32
	err := tx.QueryRow(ctx, "SELECT generation, total_partitions FROM projection_topology WHERE projection_name = $1", projection).Scan(&t.Generation, &current)
	if err == nil && int(current) == n {
		t.TotalPartitions = n
		return t, nil
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("reading topology: %w", err)
	}
	if _, err := tx.Exec(ctx, createTopologySQL, projection, n); err != nil {
		return t, fmt.Errorf("creating topology: %w", err)
	}
	var old int32
	if err := tx.QueryRow(ctx, `SELECT generation, total_partitions FROM projection_topology
		WHERE projection_name = $1 FOR UPDATE`, projection).Scan(&t.Generation, &old); err != nil {
		return t, fmt.Errorf("locking topology: %w", err)
	}
	t.TotalPartitions = int(old)
	if int(old) == n {
		return t, nil
	}

	// The old generation's final vector. A partition that never ran has
	// no row and applied nothing: position zero.
	final := make([]Position, old)
	rows, err := tx.Query(ctx, `SELECT partition_key, last_transaction_id, last_global_position
		FROM projection_checkpoints WHERE projection_name = $1`, projection)
	if err != nil {
		return t, fmt.Errorf("reading checkpoints: %w", err)
	}
	var key int32
	var pos Position
	_, err = pgx.ForEachRow(rows, []any{&key, &pos.TransactionID, &pos.GlobalPosition}, func() error {
		if int(key) < len(final) {
			final[key] = pos
		}
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("reading checkpoints: %w", err)
	}
	start := final[0]
	for _, c := range final[1:] {
		if c.Less(start) {
			start = c
		}
	}

	batch := &pgx.Batch{}
	for k, c := range final {
		batch.Queue(`INSERT INTO projection_frontier (projection_name, generation, total_partitions, partition_key, last_transaction_id, last_global_position)
			VALUES ($1, $2, $3, $4, $5, $6)`, projection, t.Generation, int(old), k, c.TransactionID, c.GlobalPosition)
	}
	batch.Queue(`UPDATE projection_topology SET events_processed_before = events_processed_before +
		(SELECT coalesce(sum(events_processed), 0) FROM projection_checkpoints WHERE projection_name = $1)
		WHERE projection_name = $1`, projection)
	batch.Queue(`DELETE FROM projection_checkpoints WHERE projection_name = $1`, projection)
	batch.Queue(`INSERT INTO projection_checkpoints (projection_name, partition_key, total_partitions, generation, last_transaction_id, last_global_position)
		SELECT $1, k, $2, $3, $4, $5 FROM generate_series(0, $2 - 1) AS k`, projection, n, t.Generation+1, start.TransactionID, start.GlobalPosition)
	batch.Queue(`UPDATE projection_topology SET generation = $2, total_partitions = $3, updated_at = now()
		WHERE projection_name = $1`, projection, t.Generation+1, n)
	// Every live checkpoint is now at start: entries whose highest
	// position is at or before it can no longer skip anything.
	batch.Queue(pruneFrontierSQL, projection)
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return t, fmt.Errorf("switching generation: %w", err)
	}
	t.Generation++
	t.TotalPartitions = n
	return t, nil
}

// pruneFrontierSQL drops the frontier entries of generations whose highest
// position every live checkpoint of the projection has reached.
const pruneFrontierSQL = `
WITH entry_max AS (
    SELECT DISTINCT ON (generation) generation, last_transaction_id AS x, last_global_position AS p
    FROM projection_frontier WHERE projection_name = $1
    ORDER BY generation, last_transaction_id DESC, last_global_position DESC
)
DELETE FROM projection_frontier f USING entry_max m
WHERE f.projection_name = $1 AND f.generation = m.generation
  AND NOT EXISTS (SELECT 1 FROM projection_checkpoints c
                  WHERE c.projection_name = $1
                    AND (c.last_transaction_id, c.last_global_position) < (m.x, m.p))`

// EventsProcessed returns how many events a projection has handled, over
// all its partitions and topology generations. With the ErrorPolicySkip or
// ErrorPolicyDeadLetter policies, events set aside are not counted.
func EventsProcessed(ctx context.Context, db DBTX, projection string) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT
		coalesce((SELECT events_processed_before FROM projection_topology WHERE projection_name = $1), 0) +
		coalesce((SELECT sum(events_processed) FROM projection_checkpoints WHERE projection_name = $1), 0)`, projection).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting events processed by projection %q: %w", projection, err)
	}
	return n, nil
}

// ResetProjection deletes a projection's checkpoints, topology and
// frontier, so that it starts over from the beginning of the log: the way
// to rebuild a read model (clear the read model in the same transaction).
// A running processor of the projection starts over on its next batch.
func ResetProjection(ctx context.Context, db DBTX, projection string) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// Lock the topology first, as a switch does, so batches in
		// flight finish before the reset and later ones see it.
		if _, err := tx.Exec(ctx, "SELECT 1 FROM projection_topology WHERE projection_name = $1 FOR UPDATE", projection); err != nil {
			return err
		}
		for _, table := range []string{"projection_checkpoints", "projection_frontier", "projection_topology"} {
			if _, err := tx.Exec(ctx, "DELETE FROM "+table+" WHERE projection_name = $1", projection); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resetting projection %q: %w", projection, err)
	}
	return nil
}

// frontierEntry is one earlier generation's final checkpoint vector.
type frontierEntry struct {
	generation int64
	final      []Position
	highest    Position
}

// frontier is the part of a projection's frontier a processor still needs.
type frontier []frontierEntry

func loadFrontier(ctx context.Context, tx pgx.Tx, projection string) (frontier, error) {
	rows, err := tx.Query(ctx, `SELECT generation, total_partitions, partition_key, last_transaction_id, last_global_position
		FROM projection_frontier WHERE projection_name = $1 ORDER BY generation, partition_key`, projection)
	if err != nil {
		return nil, err
	}
	var f frontier
	var gen int64
	var total, key int32
	var pos Position
	_, err = pgx.ForEachRow(rows, []any{&gen, &total, &key, &pos.TransactionID, &pos.GlobalPosition}, func() error {
		if len(f) == 0 || f[len(f)-1].generation != gen {
			f = append(f, frontierEntry{generation: gen, final: make([]Position, total)})
		}
		e := &f[len(f)-1]
		if int(key) < len(e.final) {
			e.final[key] = pos
		}
		if e.highest.Less(pos) {
			e.highest = pos
		}
		return nil
	})
	return f, err
}

// applied reports whether an earlier generation applied e: whether e is at
// or before the final checkpoint of the partition that owned its aggregate.
func (f frontier) applied(e *PersistedEvent, strategy PartitionStrategy) bool {
	pos := e.Position()
	for i := range f {
		entry := &f[i]
		if entry.highest.Less(pos) {
			continue
		}
		owner := ownerOf(e.AggregateID, len(entry.final), strategy)
		if owner >= 0 && !entry.final[owner].Less(pos) {
			return true
		}
	}
	return false
}

// without returns f less the entries whose highest position is at or
// before pos: they cannot skip anything after it.
func (f frontier) without(pos Position) frontier {
	kept := f[:0]
	for _, e := range f {
		if pos.Less(e.highest) {
			kept = append(kept, e)
		}
	}
	return kept
}

// ownerOf returns the partition that processes aggregateID among total
// partitions, or -1 if a custom strategy assigns it to none.
func ownerOf(aggregateID string, total int, strategy PartitionStrategy) int {
	if isHashStrategy(strategy) {
		return PartitionOf(aggregateID, total)
	}
	for k := range total {
		if strategy.ShouldProcess(aggregateID, k, total) {
			return k
		}
	}
	return -1
}

// partitions is "1 partition" or "n partitions", for messages.
func partitions(n int) string {
	if n == 1 {
		return "1 partition"
	}
	return fmt.Sprintf("%d partitions", n)
}
