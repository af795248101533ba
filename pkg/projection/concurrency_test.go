package projection_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// No-skipped-events test (DESIGN.md rule 2): appenders commit out of
// global_position order while processors run; every committed event must be
// applied exactly once and no rolled-back event ever.

const applierProjection = "applier"

// applier records every event it handles with a plain INSERT, so applying an
// event twice fails on the primary key and stops the processor.
type applier struct{ partitionKey int }

func (applier) Name() string { return applierProjection }

func (a applier) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, `INSERT INTO applied (event_id, aggregate_id, aggregate_version, global_position, partition_key)
		VALUES ($1, $2, $3, $4, $5)`, e.EventID, e.AggregateID, e.AggregateVersion, e.GlobalPosition, a.partitionKey)
	return err
}

// committedTx is what an appender saw of one committed transaction.
type committedTx struct {
	minPos, maxPos int64
	// seqBefore is taken just before Commit is called, seqAfter just after
	// it returned, from one counter shared by all appenders.
	seqBefore, seqAfter int64
}

func TestNoSkippedEventsUnderConcurrentAppenders(t *testing.T) {
	t.Run("one partition", func(t *testing.T) { testConcurrentAppenders(t, 1) })
	t.Run("four partitions", func(t *testing.T) { testConcurrentAppenders(t, 4) })
}

func testConcurrentAppenders(t *testing.T, partitions int) {
	const (
		appenders  = 10
		minTxs     = 40  // per appender, at least
		aggregates = 64  // shared by all appenders
		progressAt = 100 // appenders keep going until this many events are applied
	)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool := newPool(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE applied (
		event_id          uuid PRIMARY KEY,
		aggregate_id      text   NOT NULL,
		aggregate_version bigint NOT NULL,
		global_position   bigint NOT NULL,
		partition_key     int    NOT NULL,
		apply_seq         bigint GENERATED ALWAYS AS IDENTITY)`); err != nil {
		t.Fatal(err)
	}
	// Appenders and processors get pools of their own, big enough that
	// nobody waits for a connection.
	openPool := func(maxConns int32) *pgxpool.Pool {
		cfg := pool.Config()
		cfg.MaxConns = maxConns
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	appendPool := openPool(appenders + 2)
	procPool := openPool(int32(partitions) + 2)
	store := projection.NewStore()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	// Processors.
	procCtx, stopProcs := context.WithCancel(ctx)
	defer stopProcs()
	procDone := make([]chan error, partitions)
	for key := range partitions {
		cfg := projection.DefaultProcessorConfig()
		cfg.BatchSize = 10
		cfg.PollInterval = 5 * time.Millisecond
		cfg.PartitionKey, cfg.TotalPartitions = key, partitions
		procDone[key] = make(chan error, 1)
		go func() {
			procDone[key] <- projection.NewProcessor(procPool, store, cfg).Run(procCtx, applier{partitionKey: key})
		}()
	}
	// A processor that stops before it is told to has failed (a duplicate
	// apply, for one): report it at once.
	procFailed := func() error {
		for key, ch := range procDone {
			select {
			case err := <-ch:
				ch <- err
				return fmt.Errorf("processor %d returned early: %w", key, err)
			default:
			}
		}
		return nil
	}
	countApplied := func() int64 {
		var n int64
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM applied").Scan(&n); err != nil {
			t.Fatalf("counting applied: %v", err)
		}
		return n
	}

	// Appenders keep going until the processors have visibly applied
	// events while appends were in flight.
	var progressed atomic.Bool
	monitorDone := make(chan struct{})
	appendersDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for !progressed.Load() {
			var n int64
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM applied").Scan(&n); err == nil && n >= progressAt {
				progressed.Store(true)
				return
			}
			select {
			case <-appendersDone:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	var (
		mu         sync.Mutex
		committed  = map[uuid.UUID]bool{}
		rolledBack []uuid.UUID
		txs        []committedTx
		conflicts  int
		commitSeq  atomic.Int64
		wg         sync.WaitGroup
		errs       = make(chan error, appenders)
	)
	for w := range appenders {
		sleeper := w%2 == 1    // holds its transaction open after appending
		rollbacker := w%3 == 0 // rolls back some of its transactions
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < minTxs || !progressed.Load(); i++ {
				if err := ctx.Err(); err != nil {
					errs <- fmt.Errorf("appender %d: gave up after %d transactions: %w", w, i, err)
					return
				}
				tx, err := appendPool.Begin(ctx)
				if err != nil {
					errs <- fmt.Errorf("appender %d: begin: %w", w, err)
					return
				}
				// Aggregates in ascending order: the per-aggregate append
				// locks are then always taken in one order, so appenders
				// cannot deadlock.
				picked := map[int]bool{}
				for range 1 + rng.IntN(3) {
					picked[rng.IntN(aggregates)] = true
				}
				aggs := slices.Sorted(maps.Keys(picked))
				var ids []uuid.UUID
				var positions []int64
				conflict := false
				for _, a := range aggs {
					evs := make([]projection.Event, 1+rng.IntN(3))
					for j := range evs {
						evs[j] = projection.Event{EventID: uuid.New(), EventType: "Deposited", Payload: []byte(fmt.Sprintf(`{"appender":%d}`, w))}
						ids = append(ids, evs[j].EventID)
					}
					stored, err := store.Append(ctx, tx, "Account", fmt.Sprintf("acct-%d", a), projection.AnyVersion, evs...)
					if errors.Is(err, projection.ErrConcurrencyConflict) {
						// This transaction is older than the aggregate's
						// last writer: give up on it, as documented.
						conflict = true
						break
					}
					if err != nil {
						_ = tx.Rollback(ctx)
						errs <- fmt.Errorf("appender %d: append: %w", w, err)
						return
					}
					for _, e := range stored {
						positions = append(positions, e.GlobalPosition)
					}
					if sleeper && rng.IntN(2) == 0 {
						if _, err := tx.Exec(ctx, "SELECT pg_sleep($1)", float64(rng.IntN(8))/1000); err != nil {
							_ = tx.Rollback(ctx)
							errs <- fmt.Errorf("appender %d: sleep: %w", w, err)
							return
						}
					}
				}
				if sleeper && !conflict {
					if _, err := tx.Exec(ctx, "SELECT pg_sleep($1)", float64(1+rng.IntN(20))/1000); err != nil {
						_ = tx.Rollback(ctx)
						errs <- fmt.Errorf("appender %d: sleep: %w", w, err)
						return
					}
				}
				if conflict || (rollbacker && rng.IntN(4) == 0) {
					if err := tx.Rollback(ctx); err != nil {
						errs <- fmt.Errorf("appender %d: rollback: %w", w, err)
						return
					}
					mu.Lock()
					rolledBack = append(rolledBack, ids...)
					if conflict {
						conflicts++
					}
					mu.Unlock()
					continue
				}
				before := commitSeq.Add(1)
				if err := tx.Commit(ctx); err != nil {
					errs <- fmt.Errorf("appender %d: commit: %w", w, err)
					return
				}
				after := commitSeq.Add(1)
				mu.Lock()
				for _, id := range ids {
					committed[id] = true
				}
				txs = append(txs, committedTx{minPos: slices.Min(positions), maxPos: slices.Max(positions), seqBefore: before, seqAfter: after})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(appendersDone)
	<-monitorDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if err := procFailed(); err != nil {
		t.Fatal(err)
	}
	if !progressed.Load() {
		t.Fatal("processors applied nothing while appenders were running")
	}

	var events int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&events); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d partition(s): %d events in %d committed transactions, %d rolled-back events (%d transactions lost a concurrency conflict)",
		partitions, events, len(txs), len(rolledBack), conflicts)

	// Wait, with a deadline, for the processors to apply everything.
	catchUpDeadline := time.After(20 * time.Second)
	for {
		if err := procFailed(); err != nil {
			t.Fatal(err)
		}
		if n := countApplied(); n == events {
			break
		} else if n > events {
			t.Fatalf("applied %d events, but only %d exist", n, events)
		}
		select {
		case <-catchUpDeadline:
			var missing int64
			_ = pool.QueryRow(ctx, "SELECT count(*) FROM (SELECT event_id FROM events EXCEPT SELECT event_id FROM applied) m").Scan(&missing)
			t.Fatalf("processors did not catch up within 20s of the last append: applied %d of %d events, %d never applied",
				countApplied(), events, missing)
		case <-time.After(5 * time.Millisecond):
		}
	}
	stopProcs()
	for key, ch := range procDone {
		if err := <-ch; err != nil {
			t.Fatalf("processor %d: Run returned %v after cancellation, want nil", key, err)
		}
	}
	// Nothing is left to apply: a catch-up of every partition finds nothing
	// (and would fail on the primary key if it re-applied anything).
	for key := range partitions {
		cfg := projection.DefaultProcessorConfig()
		cfg.BatchSize = 10
		cfg.PartitionKey, cfg.TotalPartitions = key, partitions
		if err := projection.NewProcessor(procPool, store, cfg).CatchUp(ctx, applier{partitionKey: key}); err != nil {
			t.Fatalf("final CatchUp of partition %d: %v", key, err)
		}
	}

	// Exactly once: the same count and the same set of ids.
	var applied, missing, extra, processed int64
	if err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM applied),
		(SELECT count(*) FROM (SELECT event_id FROM events EXCEPT SELECT event_id FROM applied) m),
		(SELECT count(*) FROM (SELECT event_id FROM applied EXCEPT SELECT event_id FROM events) x),
		(SELECT coalesce(sum(events_processed), 0) FROM projection_checkpoints WHERE projection_name = $1)`,
		applierProjection).Scan(&applied, &missing, &extra, &processed); err != nil {
		t.Fatal(err)
	}
	if applied != events || missing != 0 || extra != 0 {
		t.Fatalf("applied %d of %d events: %d never applied, %d applied but not in the log", applied, events, missing, extra)
	}
	if processed != events {
		t.Fatalf("checkpoints count %d events processed, want %d", processed, events)
	}

	// The log holds exactly what the appenders committed, and nothing
	// rolled back was stored or applied.
	if int64(len(committed)) != events {
		t.Fatalf("appenders committed %d events, the log holds %d", len(committed), events)
	}
	rows, err := pool.Query(ctx, "SELECT event_id FROM events")
	if err != nil {
		t.Fatal(err)
	}
	logIDs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range logIDs {
		if !committed[id] {
			t.Fatalf("event %s is in the log but no appender committed it", id)
		}
	}
	if len(rolledBack) == 0 {
		t.Fatal("no transaction was rolled back; the test did not exercise rollbacks")
	}
	var leaked int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events WHERE event_id = ANY($1))
		+ (SELECT count(*) FROM applied WHERE event_id = ANY($1))`, rolledBack).Scan(&leaked); err != nil {
		t.Fatal(err)
	}
	if leaked != 0 {
		t.Fatalf("%d rows of rolled-back events were stored or applied", leaked)
	}

	// Each aggregate's events were applied in version order, each by the
	// partition that owns it, and every partition did some of the work.
	var outOfOrder, wrongPartition int64
	if err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM (
			SELECT aggregate_version - lag(aggregate_version) OVER (PARTITION BY aggregate_id ORDER BY apply_seq) AS step
			FROM applied) s WHERE step <> 1),
		(SELECT count(*) FROM applied a JOIN events e USING (event_id) WHERE e.partition_hash % $1 <> a.partition_key)`,
		partitions).Scan(&outOfOrder, &wrongPartition); err != nil {
		t.Fatal(err)
	}
	if outOfOrder != 0 {
		t.Fatalf("%d events were applied out of their aggregate's version order", outOfOrder)
	}
	if wrongPartition != 0 {
		t.Fatalf("%d events were applied by a partition that does not own their aggregate", wrongPartition)
	}
	rows, err = pool.Query(ctx, "SELECT partition_key, count(*) FROM applied GROUP BY partition_key ORDER BY partition_key")
	if err != nil {
		t.Fatal(err)
	}
	perPartition, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		Key int32
		N   int64
	}])
	if err != nil {
		t.Fatal(err)
	}
	if len(perPartition) != partitions {
		t.Fatalf("applied per partition: %v, want all %d partitions to apply events", perPartition, partitions)
	}

	// The load really committed out of order. In the log: an event placed
	// earlier by a transaction with a higher id ...
	var inverted bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM events a JOIN events b
		ON a.global_position < b.global_position AND a.transaction_id > b.transaction_id)`).Scan(&inverted); err != nil {
		t.Fatal(err)
	}
	if !inverted {
		t.Fatal("transaction id order matches global_position order everywhere; appends did not interleave")
	}
	// ... and as observed by the appenders: a transaction whose events all
	// come after another's finished committing before the other began to.
	commitInversions := 0
	for _, a := range txs {
		for _, b := range txs {
			if a.seqAfter < b.seqBefore && a.minPos > b.maxPos {
				commitInversions++
			}
		}
	}
	if commitInversions == 0 {
		t.Fatal("no transaction committed before one holding lower global positions; commits did not land out of order")
	}
	t.Logf("%d pairs of transactions committed out of global_position order; applied per partition %v", commitInversions, perPartition)
}
