package projection

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// HandlerError reports a poison event: one a projection failed to handle
// because of the event, not because the database or the context failed
// (those come back as other errors, which are safe to retry). The batch it
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

// ErrTimeout is matched (with errors.Is) by every [*TimeoutError].
var ErrTimeout = errors.New("database not responding")

// TimeoutError reports a batch that ran out of one of its bounds
// ([ProcessorConfig.StatementTimeout], [ProcessorConfig.BatchTimeout])
// while its context was live: the database accepted the connection but did
// not answer in time (stopped, overloaded, a network blackhole), or a
// Handle took too long. The batch was rolled back; retrying is safe.
type TimeoutError struct {
	// Projection and PartitionKey name the processor.
	Projection   string
	PartitionKey int
	// Op is what the batch was waiting for, e.g. "reading events".
	Op string
	// Bound names the bound that ran out, "statement timeout" or
	// "batch timeout", and Timeout is its value.
	Bound   string
	Timeout time.Duration
	// Err is the error the batch failed with.
	Err error
}

// Error reads like `projection "p" partition 0: reading events: database
// not responding: no answer within the statement timeout of 10s`.
func (e *TimeoutError) Error() string {
	return fmt.Sprintf("projection %q partition %d: %s: %v: no answer within the %s of %s",
		e.Projection, e.PartitionKey, e.Op, ErrTimeout, e.Bound, e.Timeout)
}

// Unwrap returns the error the batch failed with.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Is makes a TimeoutError match ErrTimeout and context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

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
	// EventsSkipped is the number of events fetched but not handled because
	// an earlier topology generation applied them (see [SetTopology]).
	EventsSkipped int64
	// EventsPoisoned is the number of events whose Handle failed and that
	// the error policy skipped or dead-lettered.
	EventsPoisoned int64
	// Position is how far the processor has read: everything in its
	// partition and scope before it has been handled.
	Position Position
	// LastHandled is the position of the last event handled (zero before
	// the first). Position can be ahead of it: after a short batch it is
	// the horizon, since everything below it was seen.
	LastHandled Position
	// Horizon is the oldest transaction id that was still in flight at the
	// last batch; no event at or after it could be read yet.
	Horizon uint64
	// Generation and TotalPartitions are the topology of the last batch,
	// also while idle (zero while following and no topology exists).
	Generation      int64
	TotalPartitions int
	// Idle is true while the partition key is outside the topology (or,
	// following, there is none yet): the processor waits for it to grow.
	Idle bool
	// Wakeups is the number of times a notification ended a caught-up
	// processor's wait before its poll interval ran out
	// ([WakeupsListen]).
	Wakeups int64
}

// Stats returns the processor's counters. It is safe to call while the
// processor runs.
func (p *Processor) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// NewProcessor returns a processor that reads the events of pool's log. The
// config is validated (after its zero fields take their defaults) when the
// processor runs.
//
// store is not used: it keeps the guides' three-argument shape, and may be
// nil. In particular the store's bounded context ([WithBoundedContext])
// does not scope what the processor reads: it reads every bounded context
// and aggregate type, unless the projection is a [ScopedProjection], whose
// AggregateTypes and BoundedContexts narrow it (in SQL).
func NewProcessor(pool *pgxpool.Pool, store *Store, config ProcessorConfig) *Processor {
	return &Processor{pool: pool, cfg: config}
}

// Config returns the processor's configuration with defaults applied.
func (p *Processor) Config() ProcessorConfig { return p.cfg.withDefaults() }

// Run processes events until ctx is cancelled, then returns nil; a batch in
// flight at that moment is rolled back. Any other failure (a handler error,
// a lost database connection, a [*TopologyManagedError] under
// TopologyApply) stops it and is returned.
func (p *Processor) Run(ctx context.Context, proj Projection) error {
	return p.run(ctx, proj, false)
}

// CatchUp processes events until every event committed before it was
// called has been handled, then returns nil. It is Run for jobs that should
// end: rebuilds, tests, batch pipelines. If a transaction that was in
// flight when CatchUp was called stays open, CatchUp waits for it (an event
// it appends must not be missed), polling like Run (woken on commit only
// through a configured [ProcessorConfig.Listener]: CatchUp opens no
// listening connection of its own). If ctx ends first, CatchUp returns
// ctx's error.
func (p *Processor) CatchUp(ctx context.Context, proj Projection) error {
	return p.run(ctx, proj, true)
}

func (p *Processor) run(ctx context.Context, proj Projection, untilCaughtUp bool) error {
	b, err := p.newBatcher(proj)
	if err != nil {
		return err
	}
	// finish turns an error into Run's or CatchUp's result: a cancelled
	// ctx is how Run is stopped, and an interruption for CatchUp.
	finish := func(err error) error {
		switch {
		case ctx.Err() == nil:
			return noSchema(err)
		case untilCaughtUp:
			return fmt.Errorf("projection %q partition %d: catching up: %w", b.name, b.cfg.PartitionKey, ctx.Err())
		}
		return nil
	}
	var target uint64
	if untilCaughtUp {
		if target, err = b.catchUpTarget(ctx); err != nil {
			return finish(err)
		}
	}
	if b.cfg.Topology == TopologyApply {
		if err := b.applyTopology(ctx); err != nil {
			return finish(err)
		}
	}
	b.log.Info("projection processor started")
	defer b.log.Info("projection processor stopped")

	// Before the first batch: a commit notified from now on is either
	// seen by that batch or wakes the next one.
	sub := b.subscribe(untilCaughtUp)
	if sub != nil {
		defer sub.unsubscribe()
	}
	poll := time.NewTimer(0)
	defer poll.Stop()
	var backoff time.Duration
	// safetyPoll: the last wait was a listening processor's long one (or
	// a fallback poll) and ended by its timer. fallback: such a poll found
	// events that no notification announced (a writer with wakeups off,
	// see migration 0008), so the processor polls at PollInterval until
	// one finds nothing.
	var safetyPoll, fallback bool
	for {
		if sub != nil {
			// Every commit notified so far is visible to this batch.
			sub.drain()
			if sub.retry.Swap(false) {
				b.retrier.due = time.Time{}
			}
		}
		if err := b.retryDeadLetters(ctx); err != nil {
			return finish(err)
		}
		r, err := b.step(ctx)
		if err != nil || ctx.Err() != nil {
			return finish(err)
		}
		if sub != nil {
			if total := int64(b.wakeupTotal()); sub.total.Swap(total) != total {
				// The filter changed (a first batch, a new partition
				// count, idling): a notification filtered out by the old
				// one before the swap was of a commit that the next
				// batch's snapshot sees. Run it now.
				continue
			}
		}
		if safetyPoll {
			fallback, safetyPoll = r.fetched > 0, false
		}
		if r.redo || (!r.idle && r.fetched == b.cfg.BatchSize) {
			continue
		}
		if untilCaughtUp && (r.idle || r.horizon >= target) {
			return nil
		}
		wait, safety := b.nextWait(r, sub, fallback, &backoff)
		poll.Reset(wait)
		var woken <-chan struct{}
		if sub != nil {
			woken = sub.wake
		}
		select {
		case <-ctx.Done():
			return finish(nil)
		case <-poll.C:
			safetyPoll = safety
		case <-woken:
			poll.Stop() // Go 1.23 timers: no stale tick after Stop
			p.mu.Lock()
			p.stats.Wakeups++
			p.mu.Unlock()
		}
	}
}

// catchUpTarget is CatchUp's target: every transaction below the current
// snapshot's xmax has committed or is in flight; once the horizon reaches
// it, every event committed before the call is readable.
func (b *batcher) catchUpTarget(ctx context.Context) (uint64, error) {
	var target uint64
	tctx, cancel := context.WithTimeout(ctx, b.cfg.StatementTimeout)
	defer cancel()
	err := b.pool.QueryRow(tctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())").Scan(&target)
	if err != nil && ctx.Err() == nil && tctx.Err() != nil {
		return 0, &TimeoutError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Op: "reading the catch-up target",
			Bound: "statement timeout", Timeout: b.cfg.StatementTimeout, Err: err}
	} else if err != nil {
		return 0, b.wrap("reading the catch-up target", err)
	}
	return target, nil
}

// subscribe subscribes the partition to wakeups on commit, when it
// listens; nil when it polls. CatchUp, which usually ends within a batch
// or two, opens no listening connection of its own; it uses a configured
// one.
func (b *batcher) subscribe(untilCaughtUp bool) *subscription {
	if b.cfg.Wakeups != WakeupsListen || (untilCaughtUp && b.cfg.Listener == nil) {
		return nil
	}
	l := b.cfg.Listener
	if l == nil {
		l = NewListener(b.pool, b.log)
	}
	return l.subscribe(b.cfg.PartitionKey)
}

// applyTopology sets the topology to TotalPartitions, as a standalone
// processor with TopologyApply does at start: an operator-managed topology
// is refused with a *TopologyManagedError, unless its count is already
// ours.
func (b *batcher) applyTopology(ctx context.Context) error {
	// A switch waits for the batches in flight, each within its
	// BatchTimeout.
	tctx, cancel := context.WithTimeout(ctx, b.cfg.BatchTimeout+b.cfg.StatementTimeout)
	defer cancel()
	_, err := SetTopologyAs(tctx, b.pool, b.name, b.cfg.TotalPartitions, TopologyOptions{Logger: b.log})
	if err != nil && ctx.Err() == nil && tctx.Err() != nil {
		return &TimeoutError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Op: "switching the topology",
			Bound: "batch and statement timeouts", Timeout: b.cfg.BatchTimeout + b.cfg.StatementTimeout, Err: err}
	}
	return err
}

// nextWait is how long the processor waits after a batch that left
// nothing to do at once (r), and whether that wait is a listening
// processor's safety poll. sub is its wakeup subscription (nil: it polls),
// fallback whether it polls at PollInterval for a writer that does not
// notify; backoff is the held-back retry's current wait, which it updates.
func (b *batcher) nextWait(r stepResult, sub *subscription, fallback bool, backoff *time.Duration) (wait time.Duration, safety bool) {
	wait = b.cfg.PollInterval
	switch {
	case sub == nil:
	case !r.idle && r.horizon <= sub.notified.Load():
		// An event of ours committed but an older transaction
		// still in flight holds it back: look again soon, backing
		// off towards PollInterval (that transaction may append
		// nothing, and then nothing wakes us when it ends).
		*backoff = min(max(2*(*backoff), heldBackRetry), b.cfg.PollInterval)
		wait = *backoff
	case !sub.l.connected.Load() || !sub.l.enabled.Load():
		// Down, or the database sends no notifications (the
		// listener warned): poll as without wakeups.
		*backoff = 0
	case fallback:
		*backoff, safety = 0, true
	default:
		wait, *backoff, safety = max(b.cfg.PollInterval, b.cfg.WakeupPollInterval), 0, true
	}
	if r.unsaved && wait > idleSaveInterval {
		// The stored checkpoint is behind what we looked at: save
		// it within idleSaveInterval, so that lag reads 0.
		wait, safety = idleSaveInterval, false
	}
	return wait, safety
}

// heldBackRetry is the first wait of a processor whose notified event is
// held back by an older transaction in flight.
const heldBackRetry = time.Millisecond

// wakeupTotal is the partition count by which the listener filters event
// notifications for this batcher: 0 (take every one) for a strategy
// evaluated in Go, -1 (none: only a topology change can end idling) while
// idle.
func (b *batcher) wakeupTotal() int {
	switch {
	case b.idle:
		return -1
	case b.goFilter || !isHashStrategy(b.cfg.PartitionStrategy):
		return 0
	}
	return b.total
}

// batcher holds one run's state between batches.
type batcher struct {
	pool  *pgxpool.Pool
	stats *Processor // where step records its Stats
	proj  Projection
	// batchProj is proj as a BatchProjection, nil if it is not one, and
	// batchBuf the events handed to HandleBatch.
	batchProj BatchProjection
	batchBuf  []PersistedEvent
	// isolating: the last HandleBatch failed on an event it did not
	// name; the redo runs one event at a time to find it.
	isolating bool
	name      string
	cfg       ProcessorConfig
	log       *slog.Logger
	query     eventQuery
	scanner   eventScanner
	buf       []PersistedEvent

	// The topology generation the batcher last saw, its partition count,
	// and the frontier entries that can still skip events for this
	// partition. generation 0: not known yet.
	generation int64
	total      int
	frontier   frontier
	// goFilter: the strategy is evaluated in Go, not SQL.
	goFilter bool
	// indexChecked is when the batcher last looked whether the partition
	// index for its count is valid (query.partitionIndex).
	indexChecked time.Time
	idle         bool
	// reload: re-read the frontier at the next batch that runs (after
	// idling, the frontier may have changed under the same generation
	// number only through a reset, but reloading is cheap and sure).
	reload bool
	// lastHandled is the position of the last event handled.
	lastHandled Position

	// poison holds events whose Handle failed under a skip or dead-letter
	// policy, with the error: the rolled-back batch is redone without
	// them. Entries go once a committed checkpoint passes them.
	poison map[Position]error

	// floor is a position up to which this run has seen that there is
	// nothing for it to handle, valid while the stored checkpoint is not
	// behind floorBase. It lets an idle partition skip rows of other
	// partitions without writing its checkpoint on every poll.
	floor, floorBase Position

	// saved is when this run last wrote its checkpoint.
	saved time.Time
	// waiting is the round trip the current batch waits for, for
	// reporting a bound that ran out: a TimeoutError.
	waiting waiting
	// retrier runs requested dead-letter retries (deadletters.go).
	retrier deadLetterRetrier
}

// idleSaveInterval is how often, at most, a partition with nothing to
// handle records how far it has looked. Without it the stored checkpoint
// of a scoped projection would stay before the last event in its scope,
// and lag read from the checkpoints (the operator's status) would never
// reach 0; with it the cost is one small UPDATE a second per idle
// partition.
const idleSaveInterval = time.Second

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
	b.log = cfg.Logger.With("projection", name, "partition", cfg.PartitionKey)
	b.query = eventQuery{limit: cfg.BatchSize}
	if bp, ok := proj.(BatchProjection); ok {
		b.batchProj, b.batchBuf = bp, make([]PersistedEvent, 0, cfg.BatchSize)
	}
	if sp, ok := proj.(ScopedProjection); ok {
		b.query.aggregateTypes = sp.AggregateTypes()
		b.query.boundedContexts = sp.BoundedContexts()
	}
	return b, nil
}

// stepResult is what one batch saw.
type stepResult struct {
	// redo: the batch was rolled back over a poison event; run it again
	// at once, without that event.
	redo    bool
	fetched int
	// horizon is the transaction id the batch read below.
	horizon uint64
	// idle: the partition key is outside the projection's topology (or,
	// following, there is no topology yet); nothing was read.
	idle bool
	// unsaved: the batch looked past the stored checkpoint but did not
	// write it (see idleSaveInterval).
	unsaved bool
}

// step runs one batch within BatchTimeout, each of its own statements
// within StatementTimeout. A bound that runs out while ctx is still live
// fails the batch with a *TimeoutError; pgx closes the connection, so the
// server rolls the batch back and releases its locks.
func (b *batcher) step(ctx context.Context) (stepResult, error) {
	bctx, cancel := context.WithTimeout(ctx, b.cfg.BatchTimeout)
	defer cancel()
	b.waiting = waiting{}
	r, err := b.batch(bctx)
	if err == nil || ctx.Err() != nil {
		return r, err
	}
	w := b.waiting
	switch {
	case bctx.Err() != nil:
		err = &TimeoutError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Op: w.op, Bound: "batch timeout", Timeout: b.cfg.BatchTimeout, Err: err}
	case w.ctx != nil && w.ctx.Err() == context.DeadlineExceeded:
		err = &TimeoutError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Op: w.op, Bound: "statement timeout", Timeout: w.timeout, Err: err}
	}
	return r, err
}

// waiting is the database round trip a batch is waiting for.
type waiting struct {
	op      string
	timeout time.Duration
	ctx     context.Context
}

// statement returns ctx bounded by StatementTimeout for the round trip op.
func (b *batcher) statement(ctx context.Context, op string) (context.Context, context.CancelFunc) {
	sctx, cancel := context.WithTimeout(ctx, b.cfg.StatementTimeout)
	b.waiting = waiting{op: op, timeout: b.cfg.StatementTimeout, ctx: sctx}
	return sctx, cancel
}

// batch runs one batch as named steps, each its own function: begin the
// transaction, lock the topology and checkpoint, read the events, apply
// them, and commit, with the checkpoint or (nothing having changed) without.
func (b *batcher) batch(ctx context.Context) (stepResult, error) {
	began := time.Now()
	tx, err := b.begin(ctx)
	if err != nil {
		return stepResult{}, err
	}
	defer tx.end(ctx, b.cfg.StatementTimeout)

	sctx, cancel := b.statement(ctx, "locking topology and checkpoint")
	defer cancel()
	cp, horizon, err := b.lockState(sctx, tx.tx)
	if err != nil {
		return stepResult{}, err
	}
	if b.idle {
		b.record(began, 0, 0, 0, 0, cp, horizon)
		return stepResult{horizon: horizon, idle: true}, nil
	}

	events, err := b.read(ctx, tx.tx, cp, horizon)
	if err != nil {
		return stepResult{}, err
	}
	a, err := b.apply(ctx, tx.tx, events)
	if err != nil || a.redo {
		return stepResult{redo: a.redo}, err // the deferred end rolls the batch back
	}

	// A short batch saw everything below the horizon.
	next := Position{TransactionID: horizon}
	if len(events) == b.cfg.BatchSize {
		next = events[len(events)-1].Position()
	}
	b.frontier = b.frontier.without(next)
	if a.handled == 0 && a.poisoned == 0 && (!cp.Less(next) || b.cfg.Clock.Since(b.saved) < idleSaveInterval) {
		// Nothing changed in the read model: remember how far we looked
		// instead of writing a checkpoint on every idle poll.
		b.floor, b.floorBase = next, cp
		if err := b.commit(ctx, tx); err != nil {
			return stepResult{}, err
		}
		b.isolating = false
		b.record(began, len(events), 0, a.skipped, 0, next, horizon)
		return stepResult{fetched: len(events), horizon: horizon, unsaved: cp.Less(next)}, nil
	}
	if err := b.checkpoint(ctx, tx, next, a.handled); err != nil {
		return stepResult{}, err
	}
	b.record(began, len(events), a.handled, a.skipped, a.poisoned, next, horizon)
	return stepResult{fetched: len(events), horizon: horizon}, nil
}

// batchTx is a batch's transaction on a connection of its own.
type batchTx struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
	// committed: tx ended by a COMMIT it was not told about (see
	// checkpoint), so it must not be rolled back.
	committed bool
}

// end rolls the transaction back unless it committed, and gives the
// connection back to the pool (destroying it if a transaction is left
// open). The rollback runs even when ctx is done.
func (t *batchTx) end(ctx context.Context, timeout time.Duration) {
	if !t.committed {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		_ = t.tx.Rollback(rctx)
		cancel()
	}
	t.conn.Release()
}

// begin acquires a connection and begins the batch's transaction on it.
// The connection is acquired apart from the transaction so that the commit
// can be pipelined with the checkpoint update (see checkpoint): a pool
// transaction only goes back to the pool through its own Commit or
// Rollback, each a round trip of its own.
func (b *batcher) begin(ctx context.Context) (*batchTx, error) {
	sctx, cancel := b.statement(ctx, "acquiring connection")
	defer cancel()
	conn, err := b.pool.Acquire(sctx)
	if err != nil {
		return nil, b.wrap("acquiring connection", err)
	}
	sctx, cancel = b.statement(ctx, "beginning batch")
	defer cancel()
	tx, err := conn.Begin(sctx)
	if err != nil {
		conn.Release()
		return nil, b.wrap("beginning batch", err)
	}
	return &batchTx{conn: conn, tx: tx}, nil
}

// read fetches the batch's events after checkpoint cp and below the
// horizon, starting from the floor when that is valid. The events live in
// b.buf until the next batch.
func (b *batcher) read(ctx context.Context, tx pgx.Tx, cp Position, horizon uint64) ([]PersistedEvent, error) {
	q := b.query
	q.after, q.horizon = cp, horizon
	if cp.Less(b.floor) && !cp.Less(b.floorBase) {
		// Start from the floor unless the checkpoint went back behind the
		// one the floor was measured from.
		q.after = b.floor
	}
	sql, args := q.build()
	sctx, cancel := b.statement(ctx, "reading events")
	defer cancel()
	rows, err := tx.Query(sctx, sql, args...)
	if err != nil {
		return nil, b.wrap("reading events", err)
	}
	events, err := b.scanner.collect(rows, b.buf[:0])
	if err != nil {
		return nil, b.wrap("reading events", err)
	}
	b.buf = events
	return events, nil
}

// applied counts what apply did with a batch's events.
type applied struct {
	handled, skipped, poisoned int
	// redo: an event's Handle failed under a skip or dead-letter policy;
	// the batch must be rolled back and run again without it.
	redo bool
}

// apply hands the batch's events to the projection in tx, leaving out
// those of other partitions (a strategy filtered in Go), those an earlier
// generation applied, and those the error policy set aside. A
// BatchProjection gets them in one HandleBatch call, unless the batch is
// being isolated after such a call failed; then, as any other projection,
// one event at a time.
func (b *batcher) apply(ctx context.Context, tx pgx.Tx, events []PersistedEvent) (applied, error) {
	var a applied
	hctx := context.WithValue(ctx, batchInfoKey{}, BatchInfo{
		Projection: b.name, PartitionKey: b.cfg.PartitionKey, TotalPartitions: b.total, Generation: b.generation})
	b.waiting = waiting{op: "handling events", timeout: b.cfg.BatchTimeout}
	whole := b.batchProj != nil && !b.isolating
	toApply := b.batchBuf[:0]
	for i := range events {
		e := &events[i]
		if b.goFilter && !b.cfg.PartitionStrategy.ShouldProcess(e.AggregateID, b.cfg.PartitionKey, b.total) {
			continue
		}
		if len(b.frontier) > 0 && b.frontier.applied(e, b.cfg.PartitionStrategy) {
			a.skipped++ // an earlier generation applied it
			continue
		}
		if herr, ok := b.poison[e.Position()]; ok {
			if err := b.setAside(ctx, tx, e, herr); err != nil {
				return a, err
			}
			a.poisoned++
			continue
		}
		if whole {
			toApply = append(toApply, *e)
			continue
		}
		if err := b.handle(hctx, tx, events[i:i+1:i+1]); err != nil {
			if err := b.handleFailed(ctx, tx, e, err); !errors.Is(err, errRedo) {
				return a, err
			}
			// Found: the redo runs the batch as a whole again, without it.
			b.isolating = false
			return applied{redo: true}, nil
		}
		a.handled++
		b.lastHandled = e.Position()
	}
	if !whole || len(toApply) == 0 {
		return a, nil
	}
	b.batchBuf = toApply
	if err := b.batchProj.HandleBatch(hctx, tx, toApply); err != nil {
		first, last := toApply[0], toApply[len(toApply)-1]
		if !isPoison(ctx, tx, err) {
			return a, b.wrap(fmt.Sprintf("handling a batch of %d events at positions %d to %d", len(toApply), first.GlobalPosition, last.GlobalPosition), err)
		}
		// Some event failed the batch, but which? Roll back and run the
		// batch again one event at a time: the error policy applies to
		// that event only.
		b.log.Info("projection batch handler failed; isolating the failing event", "events", len(toApply),
			"from", first.GlobalPosition, "to", last.GlobalPosition, "error", err.Error())
		b.isolating = true
		return applied{redo: true}, nil
	}
	a.handled = len(toApply)
	b.lastHandled = toApply[len(toApply)-1].Position()
	return a, nil
}

// handle applies one event: through Handle, or through HandleBatch with a
// one-event slice for a BatchProjection (see there why).
func (b *batcher) handle(ctx context.Context, tx pgx.Tx, one []PersistedEvent) error {
	if b.batchProj != nil {
		return b.batchProj.HandleBatch(ctx, tx, one)
	}
	return b.proj.Handle(ctx, tx, &one[0])
}

// errRedo is what handleFailed returns for a poison event the error policy
// sets aside: apply turns it into a redo.
var errRedo = errors.New("redo the batch without the poison event")

// handleFailed turns the error Handle returned for e into apply's result:
// a retryable error if the database or the context failed, a
// *HandlerError under ErrorPolicyStop, and otherwise errRedo, with e
// recorded as poison so the redo sets it aside.
func (b *batcher) handleFailed(ctx context.Context, tx pgx.Tx, e *PersistedEvent, err error) error {
	if !isPoison(ctx, tx, err) {
		// The database or the context failed, not the event: not a
		// HandlerError, so callers may retry.
		return b.wrap(fmt.Sprintf("handling event %s (%s) at position %d", e.EventID, e.EventType, e.GlobalPosition), err)
	}
	herr := &HandlerError{Projection: b.name, PartitionKey: b.cfg.PartitionKey, Position: e.Position(),
		EventID: e.EventID, EventType: e.EventType, AggregateType: e.AggregateType, AggregateID: e.AggregateID, Err: err}
	if b.cfg.ErrorPolicy == ErrorPolicyStop {
		return herr
	}
	if b.poison == nil {
		b.poison = map[Position]error{}
	}
	b.poison[e.Position()] = herr
	return errRedo
}

// commit commits a batch that changed nothing in the read model, leaving
// the stored checkpoint where it is.
func (b *batcher) commit(ctx context.Context, tx *batchTx) error {
	sctx, cancel := b.statement(ctx, "committing batch")
	defer cancel()
	if err := tx.tx.Commit(sctx); err != nil {
		return b.wrap("committing batch", err)
	}
	return nil
}

// checkpoint saves the checkpoint at next, counting handled events, and
// commits, in one round trip instead of two. If the update fails, the
// server skips the rest of the pipeline, so the COMMIT never runs and the
// deferred end rolls the transaction back. tx is not told about the
// COMMIT: once it succeeded, tx is dropped unused and the connection, idle
// again, goes back to the pool.
func (b *batcher) checkpoint(ctx context.Context, tx *batchTx, next Position, handled int) error {
	batch := &pgx.Batch{}
	batch.Queue(saveCheckpointSQL, b.name, b.cfg.PartitionKey, next.TransactionID, next.GlobalPosition, handled)
	batch.Queue("COMMIT")
	sctx, cancel := b.statement(ctx, "saving checkpoint and committing batch")
	defer cancel()
	if err := tx.tx.SendBatch(sctx, batch).Close(); err != nil {
		return b.wrap("saving checkpoint and committing batch", err)
	}
	tx.committed = true
	b.isolating = false
	b.saved = b.cfg.Clock.Now()
	b.floor, b.floorBase = next, next
	for pos := range b.poison {
		if !next.Less(pos) {
			delete(b.poison, pos)
		}
	}
	return nil
}

// setAside applies the error policy to a poison event inside the batch: it
// is logged and, under ErrorPolicyDeadLetter, recorded with its error in the
// batch's transaction.
func (b *batcher) setAside(ctx context.Context, tx pgx.Tx, e *PersistedEvent, herr error) error {
	b.log.Warn("projection event set aside by the error policy", "policy", b.cfg.ErrorPolicy.String(),
		"position", e.GlobalPosition, "eventID", e.EventID, "eventType", e.EventType, "error", herr.Error())
	if b.cfg.ErrorPolicy != ErrorPolicyDeadLetter {
		return nil
	}
	cause := herr
	if he, ok := errors.AsType[*HandlerError](herr); ok {
		cause = he.Err
	}
	sctx, cancel := b.statement(ctx, "recording dead letter")
	defer cancel()
	_, err := tx.Exec(sctx, recordDeadLetterSQL,
		b.name, e.EventID, b.cfg.PartitionKey, e.GlobalPosition, e.TransactionID, e.AggregateType, e.AggregateID, e.EventType, cause.Error())
	if err != nil {
		return b.wrap("recording dead letter", err)
	}
	return nil
}

// isPoison reports whether a Handle error is the event's fault rather than
// the database's or the context's: only then may a policy set the event
// aside. A closed connection, a cancelled context, and SQL states of
// classes 08 (connection), 40 (serialization, deadlock), 53 (resources), 57
// (operator intervention) and 58 (system) are not.
func isPoison(ctx context.Context, tx pgx.Tx, err error) bool {
	if ctx.Err() != nil || tx.Conn().IsClosed() || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return false
	}
	if netErr := net.Error(nil); errors.As(err, &netErr) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "08", "40", "53", "57", "58":
			return false
		}
	}
	return true
}

// lockState locks the topology and the partition's checkpoint, creating
// them as needed, follows a change of generation, and returns the
// checkpoint and the horizon. It sets b.idle when the partition key is
// outside the topology.
func (b *batcher) lockState(ctx context.Context, tx pgx.Tx) (Position, uint64, error) {
	var cp Position
	var gen int64
	var total int32
	var horizon uint64
	for attempt := 0; ; attempt++ {
		err := tx.QueryRow(ctx, lockStateSQL, b.name, b.cfg.PartitionKey).Scan(&gen, &total, &cp.TransactionID, &cp.GlobalPosition, &horizon)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) || attempt > 1 {
			return cp, 0, b.wrap("locking topology and checkpoint", err)
		}
		// No row: no topology, a key outside it, or a checkpoint not
		// created yet (first run, or after ResetProjection).
		err = tx.QueryRow(ctx, shareTopologySQL, b.name).Scan(&gen, &total)
		switch {
		case errors.Is(err, pgx.ErrNoRows) && b.cfg.Topology == TopologyApply:
			if _, err := tx.Exec(ctx, createTopologySQL, b.name, b.cfg.TotalPartitions); err != nil {
				return cp, 0, b.wrap("creating topology", err)
			}
		case errors.Is(err, pgx.ErrNoRows):
			b.setIdle(true, 0, 0)
			return cp, 0, nil
		case err != nil:
			return cp, 0, b.wrap("reading topology", err)
		case b.cfg.PartitionKey >= int(total):
			b.setIdle(true, gen, int(total))
			return cp, 0, nil
		default:
			if _, err := tx.Exec(ctx, createCheckpointSQL, b.name, b.cfg.PartitionKey, total, gen,
				emptyToNil(b.query.aggregateTypes), emptyToNil(b.query.boundedContexts)); err != nil {
				return cp, 0, b.wrap("creating checkpoint", err)
			}
		}
	}
	b.setIdle(false, gen, int(total))
	if b.reload || gen != b.generation || int(total) != b.total {
		f, err := loadFrontier(ctx, tx, b.name)
		if err != nil {
			return cp, 0, b.wrap("reading frontier", err)
		}
		b.log.Info("projection topology", "generation", gen, "totalPartitions", total, "frontierGenerations", len(f))
		// A switch or a reset made the checkpoint anew: record the scope,
		// so that lag read from the database counts only what we handle.
		if _, err := tx.Exec(ctx, recordScopeSQL, b.name, b.cfg.PartitionKey,
			emptyToNil(b.query.aggregateTypes), emptyToNil(b.query.boundedContexts)); err != nil {
			return cp, 0, b.wrap("recording the scope", err)
		}
		b.generation, b.total, b.frontier, b.reload = gen, int(total), f, false
		// A floor measured under another partition count means nothing.
		b.floor, b.floorBase = Position{}, Position{}
		if isHashStrategy(b.cfg.PartitionStrategy) {
			b.query.partitionKey, b.query.totalPartitions = b.cfg.PartitionKey, b.total
			b.query.partitionIndex, b.indexChecked = false, time.Time{}
		} else {
			b.goFilter = b.total > 1
		}
	}
	if err := b.checkPartitionIndex(ctx, tx); err != nil {
		return cp, 0, err
	}
	return cp, horizon, nil
}

// partitionIndexCheckInterval is how often a partition of a hash strategy
// looks whether the partition index for its count is valid (or still is):
// once a build has finished, it reads through the index within this long.
const partitionIndexCheckInterval = 30 * time.Second

// checkPartitionIndex chooses, on a new partition count and then every
// partitionIndexCheckInterval, whether the partition reads through the
// partition index for its count (partition_index.go). Either way it reads
// the same rows.
func (b *batcher) checkPartitionIndex(ctx context.Context, tx pgx.Tx) error {
	if b.query.totalPartitions < MinPartitionIndexPartitions || b.cfg.Clock.Since(b.indexChecked) < partitionIndexCheckInterval {
		return nil
	}
	ok, err := partitionIndexValid(ctx, tx, b.query.totalPartitions)
	if err != nil {
		return b.wrap("checking the partition index", err)
	}
	if ok != b.query.partitionIndex {
		b.log.Info("projection partition reads", "partitionIndex", ok, "index", PartitionIndexName(b.query.totalPartitions))
	}
	b.query.partitionIndex, b.indexChecked = ok, b.cfg.Clock.Now()
	return nil
}

func (b *batcher) setIdle(idle bool, gen int64, total int) {
	if idle && !b.idle && gen == 0 {
		b.log.Warn("projection partition idle: the projection has no partition count in the database yet; "+
			"waiting for one (a processor with TopologyApply and TotalPartitions sets it: "+
			"projectionist worker --total-partitions N, or the operator for a Projection resource)",
			"generation", gen, "totalPartitions", total)
	} else if idle && !b.idle {
		b.log.Info("projection partition idle: outside the topology", "generation", gen, "totalPartitions", total)
	}
	if idle {
		b.generation, b.total, b.reload = gen, total, true
	}
	if !idle && b.idle {
		b.log.Info("projection partition resumed", "generation", gen, "totalPartitions", total)
	}
	b.idle = idle
}

// record updates the processor's Stats after a completed batch and tells
// OnBatch.
func (b *batcher) record(began time.Time, fetched, handled, skipped, poisoned int, pos Position, horizon uint64) {
	p := b.stats
	p.mu.Lock()
	p.stats.Batches++
	p.stats.EventsFetched += int64(fetched)
	p.stats.EventsHandled += int64(handled)
	p.stats.EventsSkipped += int64(skipped)
	p.stats.EventsPoisoned += int64(poisoned)
	p.stats.Position, p.stats.Horizon, p.stats.LastHandled = pos, horizon, b.lastHandled
	p.stats.Generation, p.stats.TotalPartitions, p.stats.Idle = b.generation, b.total, b.idle
	st := p.stats
	p.mu.Unlock()
	if b.cfg.OnBatch != nil {
		b.cfg.OnBatch(BatchResult{Duration: time.Since(began), Fetched: fetched, Handled: handled,
			Skipped: skipped, Poisoned: poisoned, Stats: st})
	}
}

func (b *batcher) wrap(what string, err error) error {
	return fmt.Errorf("projection %q partition %d: %s: %w", b.name, b.cfg.PartitionKey, what, err)
}
