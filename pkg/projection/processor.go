package projection

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrTopologyMismatch is returned when a projection's checkpoints were
// written for another partition count than the processor runs with. Reusing
// them would skip or repeat events, so the processor refuses.
var ErrTopologyMismatch = errors.New("topology mismatch")

// HandlerError reports an event a projection failed to handle. The batch it
// was in was rolled back: its checkpoint did not move.
type HandlerError struct {
	// Projection is the failing projection's name.
	Projection string
	// PartitionKey is the partition that was processing the event.
	PartitionKey int
	// Position is the event's place in the log.
	Position Position
	// EventID is the event's id.
	EventID uuid.UUID
	// EventType is the event's type.
	EventType string
	// AggregateType is the type of the event's aggregate.
	AggregateType string
	// AggregateID is the id of the event's aggregate.
	AggregateID string
	// Err is what Handle returned.
	Err error
}

// Error names the projection, the partition and the event.
func (e *HandlerError) Error() string {
	return fmt.Sprintf("projection %q partition %d: handling event %s (%s of %s %q) at position %d (transaction %d): %v",
		e.Projection, e.PartitionKey, e.EventID, e.EventType, e.AggregateType, e.AggregateID,
		e.Position.GlobalPosition, e.Position.TransactionID, e.Err)
}

// Unwrap returns what Handle returned.
func (e *HandlerError) Unwrap() error { return e.Err }

// Processor runs a projection: it reads the events of its partition in
// batches, hands each to the projection inside the batch's transaction, and
// advances the projection's checkpoint in that same transaction.
//
// Events are read in (transaction id, global position) order and only below
// the horizon, the oldest transaction still in flight, so an append that
// commits after a later-positioned one is never skipped. A crash at any point
// rolls the batch back, read-model writes included; the next run starts from
// the last committed checkpoint. Each event's effect therefore lands exactly
// once in a read model kept in the same database.
//
// Two processors with the same projection and partition key take turns:
// each batch locks the partition's checkpoint row.
type Processor struct {
	pool *pgxpool.Pool
	cfg  ProcessorConfig

	mu    sync.Mutex
	stats Stats
}

// Stats counts what a processor has done, over all its runs.
type Stats struct {
	// Batches is the number of batches run to completion, with or
	// without events.
	Batches int64
	// EventsFetched is the number of events the processor read from the
	// log: with the default strategy, only its own partition's.
	EventsFetched int64
	// EventsHandled is the number of events handled in committed batches.
	EventsHandled int64
	// Position is how far the processor has read: everything in its
	// partition and scope before it has been handled.
	Position Position
	// Horizon is the oldest transaction id that was still in flight at the
	// last batch; no event at or after it could be read yet.
	Horizon uint64
}

// Stats returns the processor's counters. It is safe to call while the
// processor runs.
func (p *Processor) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// NewProcessor returns a processor that reads the events of pool's log. The
// config is validated when the processor runs. store is the guides' shape
// and may be nil; the processor reads every bounded context whatever the
// store's is (a [ScopedProjection] narrows what it reads).
func NewProcessor(pool *pgxpool.Pool, store *Store, config ProcessorConfig) *Processor {
	return &Processor{pool: pool, cfg: config}
}

// Config returns the processor's configuration with defaults applied.
func (p *Processor) Config() ProcessorConfig { return p.cfg.withDefaults() }

// Run processes events until ctx is cancelled, then returns nil; a batch in
// flight at that moment is rolled back. Any other failure (a handler error,
// a lost database connection, a topology mismatch) stops it and is returned.
func (p *Processor) Run(ctx context.Context, proj Projection) error {
	return p.run(ctx, proj, false)
}

// CatchUp processes events until every event committed before it was
// called has been handled, then returns nil. It is Run for jobs that should
// end: rebuilds, tests, batch pipelines. If a transaction that was in
// flight when CatchUp was called stays open, CatchUp waits for it (an event
// it appends must not be missed), polling like Run. If ctx ends first,
// CatchUp returns ctx's error.
func (p *Processor) CatchUp(ctx context.Context, proj Projection) error {
	return p.run(ctx, proj, true)
}

func (p *Processor) run(ctx context.Context, proj Projection, untilCaughtUp bool) error {
	b, err := p.newBatcher(proj)
	if err != nil {
		return err
	}
	// CatchUp's target: every transaction below the current snapshot's
	// xmax has committed or is in flight; once the horizon reaches it,
	// every event committed before this call is readable.
	var target uint64
	if untilCaughtUp {
		if err := p.pool.QueryRow(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())").Scan(&target); err != nil {
			return b.wrap("reading the catch-up target", err)
		}
	}
	stopped := func() error {
		if untilCaughtUp {
			return fmt.Errorf("projection %q partition %d: catching up: %w", b.name, b.cfg.PartitionKey, ctx.Err())
		}
		return nil
	}
	log := b.cfg.Logger.With("projection", b.name, "partition", b.cfg.PartitionKey, "totalPartitions", b.cfg.TotalPartitions)
	log.Info("projection processor started")
	defer log.Info("projection processor stopped")

	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		fetched, horizon, err := b.step(ctx)
		if ctx.Err() != nil {
			return stopped()
		}
		if err != nil {
			return err
		}
		if fetched == b.cfg.BatchSize {
			continue
		}
		if untilCaughtUp && horizon >= target {
			return nil
		}
		poll.Reset(b.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return stopped()
		case <-poll.C:
		}
	}
}

// batcher holds one run's state between batches.
type batcher struct {
	pool     *pgxpool.Pool
	stats    *Processor // where step records its Stats
	proj     Projection
	name     string
	cfg      ProcessorConfig
	query    eventQuery
	goFilter bool
	scanner  eventScanner
	buf      []PersistedEvent

	// floor is a position up to which this run has seen that there is
	// nothing for it to handle, valid while the stored checkpoint is not
	// behind floorBase. It lets an idle partition skip rows of other
	// partitions without writing its checkpoint on every poll.
	floor, floorBase Position
}

func (p *Processor) newBatcher(proj Projection) (*batcher, error) {
	if proj == nil {
		return nil, fmt.Errorf("%w: projection is nil", ErrInvalidConfig)
	}
	name := proj.Name()
	if name == "" {
		return nil, fmt.Errorf("%w: projection %T has an empty Name()", ErrInvalidConfig, proj)
	}
	if p.pool == nil {
		return nil, fmt.Errorf("%w: pool is nil", ErrInvalidConfig)
	}
	cfg := p.cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("projection %q: %w", name, err)
	}
	b := &batcher{pool: p.pool, stats: p, proj: proj, name: name, cfg: cfg, buf: make([]PersistedEvent, 0, cfg.BatchSize)}
	b.query = eventQuery{limit: cfg.BatchSize}
	if isHashStrategy(cfg.PartitionStrategy) {
		b.query.partitionKey, b.query.totalPartitions = cfg.PartitionKey, cfg.TotalPartitions
	} else {
		b.goFilter = cfg.TotalPartitions > 1
	}
	if sp, ok := proj.(ScopedProjection); ok {
		b.query.aggregateTypes = sp.AggregateTypes()
		b.query.boundedContexts = sp.BoundedContexts()
	}
	return b, nil
}

const (
	lockCheckpointSQL = `
		SELECT last_transaction_id, last_global_position, total_partitions, pg_snapshot_xmin(pg_current_snapshot())
		FROM projection_checkpoints
		WHERE projection_name = $1 AND partition_key = $2
		FOR UPDATE`
	createCheckpointSQL = `
		INSERT INTO projection_checkpoints (projection_name, partition_key, total_partitions)
		VALUES ($1, $2, $3)
		ON CONFLICT (projection_name, partition_key) DO NOTHING`
	saveCheckpointSQL = `
		UPDATE projection_checkpoints
		SET last_transaction_id = $3, last_global_position = $4,
		    events_processed = events_processed + $5, updated_at = now()
		WHERE projection_name = $1 AND partition_key = $2`
)

// step runs one batch and returns how many events it fetched and the
// horizon it read below.
func (b *batcher) step(ctx context.Context) (int, uint64, error) {
	// The connection is acquired apart from the transaction so that the
	// commit can be pipelined with the checkpoint update (see below):
	// a pool transaction only goes back to the pool through its own
	// Commit or Rollback, each a round trip of its own.
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return 0, 0, b.wrap("acquiring connection", err)
	}
	defer conn.Release() // destroys the connection if a transaction is left open
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, 0, b.wrap("beginning batch", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback(ctx)
		}
	}()

	cp, horizon, err := b.lockCheckpoint(ctx, tx)
	if err != nil {
		return 0, 0, err
	}

	q := b.query
	q.after, q.horizon = cp, horizon
	if cp.Less(b.floor) && !cp.Less(b.floorBase) {
		// Start from the floor unless the checkpoint went back behind the
		// one the floor was measured from (someone reset it to rebuild).
		q.after = b.floor
	}
	sql, args := q.build()
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return 0, 0, b.wrap("reading events", err)
	}
	events, err := b.scanner.collect(rows, b.buf[:0])
	if err != nil {
		return 0, 0, b.wrap("reading events", err)
	}
	b.buf = events

	handled := 0
	for i := range events {
		e := &events[i]
		if b.goFilter && !b.cfg.PartitionStrategy.ShouldProcess(e.AggregateID, b.cfg.PartitionKey, b.cfg.TotalPartitions) {
			continue
		}
		if err := b.proj.Handle(ctx, tx, e); err != nil {
			return 0, 0, &HandlerError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Position: e.Position(),
				EventID: e.EventID, EventType: e.EventType, AggregateType: e.AggregateType, AggregateID: e.AggregateID, Err: err}
		}
		handled++
	}

	// A short batch saw everything below the horizon.
	next := Position{TransactionID: horizon}
	if len(events) == b.cfg.BatchSize {
		next = events[len(events)-1].Position()
	}
	if handled == 0 {
		// Nothing changed in the read model: remember how far we looked
		// instead of writing a checkpoint on every idle poll.
		b.floor, b.floorBase = next, cp
		// Commit anyway: it keeps a checkpoint row created by this batch.
		if err := tx.Commit(ctx); err != nil {
			return 0, 0, b.wrap("committing batch", err)
		}
		b.record(len(events), 0, next, horizon)
		return len(events), horizon, nil
	}
	// Save the checkpoint and commit in one round trip instead of two.
	// If the update fails, the server skips the rest of the pipeline, so
	// the COMMIT never runs and the deferred Rollback ends the
	// transaction. tx is not told about the COMMIT: once it succeeded, tx
	// is dropped unused and the connection, idle again, goes back to the
	// pool.
	batch := &pgx.Batch{}
	batch.Queue(saveCheckpointSQL, b.name, b.cfg.PartitionKey, next.TransactionID, next.GlobalPosition, handled)
	batch.Queue("COMMIT")
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return 0, 0, b.wrap("saving checkpoint and committing batch", err)
	}
	committed = true
	b.floor, b.floorBase = next, next
	b.record(len(events), handled, next, horizon)
	return len(events), horizon, nil
}

// lockCheckpoint locks the partition's checkpoint row, creating it on first
// use, and returns it with the current horizon.
func (b *batcher) lockCheckpoint(ctx context.Context, tx pgx.Tx) (Position, uint64, error) {
	var cp Position
	var total int32
	var horizon uint64
	for attempt := 0; ; attempt++ {
		err := tx.QueryRow(ctx, lockCheckpointSQL, b.name, b.cfg.PartitionKey).Scan(&cp.TransactionID, &cp.GlobalPosition, &total, &horizon)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) || attempt > 0 {
			return cp, 0, b.wrap("locking checkpoint", err)
		}
		if _, err := tx.Exec(ctx, createCheckpointSQL, b.name, b.cfg.PartitionKey, b.cfg.TotalPartitions); err != nil {
			return cp, 0, b.wrap("creating checkpoint", err)
		}
	}
	if int(total) != b.cfg.TotalPartitions {
		return cp, 0, fmt.Errorf("projection %q partition %d: %w: its checkpoints were written with %d partitions, this processor runs with %d; changing the partition count needs a topology switch",
			b.name, b.cfg.PartitionKey, ErrTopologyMismatch, total, b.cfg.TotalPartitions)
	}
	return cp, horizon, nil
}

func (b *batcher) record(fetched, handled int, pos Position, horizon uint64) {
	p := b.stats
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Batches++
	p.stats.EventsFetched += int64(fetched)
	p.stats.EventsHandled += int64(handled)
	p.stats.Position, p.stats.Horizon = pos, horizon
}

func (b *batcher) wrap(what string, err error) error {
	return fmt.Errorf("projection %q partition %d: %s: %w", b.name, b.cfg.PartitionKey, what, err)
}
