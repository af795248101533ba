package projection_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// retryLog records every application in a table without a unique key, so
// that an event applied twice shows as two rows. It fails on "Poison"
// events until fixed is set, and blocks in Handle while block is set.
type retryLog struct {
	fixed   atomic.Bool
	block   atomic.Bool
	started chan struct{}
}

func (r *retryLog) Name() string { return "retry" }
func (r *retryLog) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if _, err := tx.Exec(ctx, "INSERT INTO retried (event_id, event_type) VALUES ($1, $2)", e.EventID, e.EventType); err != nil {
		return err
	}
	if e.EventType != "Poison" {
		return nil
	}
	if r.block.Load() {
		close(r.started)
		<-ctx.Done()
		return ctx.Err()
	}
	if !r.fixed.Load() {
		return errors.New("bad payload of " + e.EventID.String())
	}
	return nil
}

// deadLettered appends events to aggregates, some poison, in a fresh,
// migrated database of this test's own, and runs a dead-letter processor of
// proj over them; it returns the pool and the poison events.
func deadLettered(t *testing.T, proj *retryLog, aggregates ...string) (*pgxpool.Pool, []projection.PersistedEvent) {
	t.Helper()
	ctx := t.Context()
	pool := newPool(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE retried (event_id uuid NOT NULL, event_type text NOT NULL, seq bigserial)`); err != nil {
		t.Fatal(err)
	}
	store := projection.NewStore()
	var poison []projection.PersistedEvent
	for _, a := range aggregates {
		for _, typ := range []string{"Fine", "Poison", "Fine"} {
			evs, err := store.Append(ctx, pool, "A", a, projection.AnyVersion, ev(typ))
			if err != nil {
				t.Fatal(err)
			}
			if typ == "Poison" {
				poison = append(poison, evs[0])
			}
		}
	}
	catchUp(t, pool, proj, 0, 1)
	if n := queryInt(t, pool, "SELECT count(*) FROM projection_dead_letters"); n != len(poison) {
		t.Fatalf("%d dead letters, want %d", n, len(poison))
	}
	return pool, poison
}

func catchUp(t *testing.T, pool *pgxpool.Pool, proj projection.Projection, key, total int) {
	t.Helper()
	cfg := projection.DefaultProcessorConfig()
	cfg.ErrorPolicy, cfg.PartitionKey, cfg.TotalPartitions = projection.ErrorPolicyDeadLetter, key, total
	if err := projection.NewProcessor(pool, nil, cfg).CatchUp(t.Context(), proj); err != nil {
		t.Fatalf("CatchUp of partition %d/%d = %v", key, total, err)
	}
}

// applied returns how many times the event was applied.
func applied(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) int {
	t.Helper()
	return queryInt(t, pool, "SELECT count(*) FROM retried WHERE event_id = $1", id)
}

// A retried event is applied once, by Handle in its partition's
// transaction, and its dead letter is gone; list, get and count agree.
func TestDeadLetterRetrySucceeds(t *testing.T) {
	ctx := t.Context()
	proj := &retryLog{}
	pool, poison := deadLettered(t, proj, "a", "b")

	dls, err := projection.ListDeadLetters(ctx, pool, "retry", projection.DeadLetterFilter{})
	if err != nil || len(dls) != 2 || dls[0].EventID != poison[0].EventID || dls[0].Position != poison[0].Position() ||
		dls[0].EventType != "Poison" || dls[0].AggregateID != "a" || !strings.Contains(dls[0].Error, "bad payload") {
		t.Fatalf("ListDeadLetters = %+v, %v; want the two poison events, oldest first", dls, err)
	}
	if dls, err := projection.ListDeadLetters(ctx, pool, "retry", projection.DeadLetterFilter{Limit: 1}); err != nil || len(dls) != 1 {
		t.Errorf("ListDeadLetters with Limit 1 = %d rows, %v", len(dls), err)
	}
	other := 3
	if dls, err := projection.ListDeadLetters(ctx, pool, "retry", projection.DeadLetterFilter{PartitionKey: &other}); err != nil || len(dls) != 0 {
		t.Errorf("ListDeadLetters of partition 3 = %d rows, %v; want none", len(dls), err)
	}

	proj.fixed.Store(true)
	if err := projection.RetryDeadLetter(ctx, pool, "retry", poison[0].EventID); err != nil {
		t.Fatal(err)
	}
	if d, err := projection.GetDeadLetter(ctx, pool, "retry", poison[0].EventID); err != nil || d.RetryRequestedAt.IsZero() {
		t.Fatalf("GetDeadLetter after the request = %+v, %v; want a pending request", d, err)
	}
	catchUp(t, pool, proj, 0, 1)
	if n := applied(t, pool, poison[0].EventID); n != 1 {
		t.Errorf("retried event applied %d times, want 1", n)
	}
	if n := applied(t, pool, poison[1].EventID); n != 0 {
		t.Errorf("the event not retried was applied %d times, want 0", n)
	}
	if _, err := projection.GetDeadLetter(ctx, pool, "retry", poison[0].EventID); !errors.Is(err, projection.ErrDeadLetterNotFound) {
		t.Errorf("GetDeadLetter of the retried event = %v, want ErrDeadLetterNotFound", err)
	}
	if n, err := projection.CountDeadLetters(ctx, pool, "retry"); err != nil || n != 1 {
		t.Errorf("CountDeadLetters = %d, %v; want 1", n, err)
	}
	if err := projection.RetryDeadLetter(ctx, pool, "retry", poison[0].EventID); !errors.Is(err, projection.ErrDeadLetterNotFound) {
		t.Errorf("retrying it again = %v, want ErrDeadLetterNotFound", err)
	}
}

// Racing retry requests and two processors of the same partition apply
// every event once.
func TestDeadLetterRetryRaces(t *testing.T) {
	ctx := t.Context()
	proj := &retryLog{}
	pool, poison := deadLettered(t, proj, "a", "b", "c", "d", "e")
	proj.fixed.Store(true)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 2 {
		wg.Go(func() {
			if err := projection.RetryDeadLetter(ctx, pool, "retry", poison[0].EventID); err != nil {
				errs <- err
			}
			if _, err := projection.RetryAllDeadLetters(ctx, pool, "retry"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	for range 2 {
		wg.Go(func() {
			cfg := projection.DefaultProcessorConfig()
			cfg.ErrorPolicy = projection.ErrorPolicyDeadLetter
			if err := projection.NewProcessor(pool, nil, cfg).CatchUp(ctx, proj); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, p := range poison {
		if n := applied(t, pool, p.EventID); n != 1 {
			t.Errorf("event %d applied %d times, want 1", p.GlobalPosition, n)
		}
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM projection_dead_letters"); n != 0 {
		t.Errorf("%d dead letters left, want 0", n)
	}
}

// A processor stopped in the middle of a retry rolls it back: nothing
// applied, the dead letter and its request stay, and the next processor
// applies it once.
func TestDeadLetterRetryInterrupted(t *testing.T) {
	ctx := t.Context()
	proj := &retryLog{started: make(chan struct{})}
	pool, poison := deadLettered(t, proj, "a")
	if _, err := projection.RetryAllDeadLetters(ctx, pool, "retry"); err != nil {
		t.Fatal(err)
	}
	proj.block.Store(true)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		cfg := projection.DefaultProcessorConfig()
		cfg.ErrorPolicy = projection.ErrorPolicyDeadLetter
		done <- projection.NewProcessor(pool, nil, cfg).Run(rctx, proj)
	}()
	<-proj.started
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run stopped mid-retry = %v, want nil", err)
	}
	if n := applied(t, pool, poison[0].EventID); n != 0 {
		t.Errorf("interrupted retry applied the event %d times, want 0", n)
	}
	d, err := projection.GetDeadLetter(ctx, pool, "retry", poison[0].EventID)
	if err != nil || d.RetryRequestedAt.IsZero() || d.Retries != 0 {
		t.Fatalf("dead letter after the interruption = %+v, %v; want it with its request", d, err)
	}

	proj.block.Store(false)
	proj.fixed.Store(true)
	catchUp(t, pool, proj, 0, 1)
	catchUp(t, pool, proj, 0, 1)
	if n := applied(t, pool, poison[0].EventID); n != 1 {
		t.Errorf("event applied %d times after the later retry, want 1", n)
	}
	if n, err := projection.CountDeadLetters(ctx, pool, "retry"); err != nil || n != 0 {
		t.Errorf("CountDeadLetters = %d, %v; want 0", n, err)
	}
}

// A retry that fails again leaves the dead letter with the new error and
// no request, and does not stop the processor, even under ErrorPolicyStop.
func TestDeadLetterRetryFailsAgain(t *testing.T) {
	ctx := t.Context()
	proj := &retryLog{}
	pool, poison := deadLettered(t, proj, "a")
	if _, err := pool.Exec(ctx, "UPDATE projection_dead_letters SET error = 'old'"); err != nil {
		t.Fatal(err)
	}
	if err := projection.RetryDeadLetter(ctx, pool, "retry", poison[0].EventID); err != nil {
		t.Fatal(err)
	}
	cfg := projection.DefaultProcessorConfig() // ErrorPolicyStop
	if err := projection.NewProcessor(pool, nil, cfg).CatchUp(ctx, proj); err != nil {
		t.Fatalf("CatchUp with a failing retry = %v, want nil", err)
	}
	d, err := projection.GetDeadLetter(ctx, pool, "retry", poison[0].EventID)
	if err != nil || !strings.Contains(d.Error, "bad payload") || !d.RetryRequestedAt.IsZero() || d.Retries != 1 {
		t.Fatalf("dead letter after the failed retry = %+v, %v; want the new error, no request, 1 retry", d, err)
	}
	if n := applied(t, pool, poison[0].EventID); n != 0 {
		t.Errorf("the failed retry's write survived %d times, want 0", n)
	}
}

// Discarding deletes the dead letter without applying it, also when a
// retry had been requested.
func TestDeadLetterDiscard(t *testing.T) {
	ctx := t.Context()
	proj := &retryLog{}
	pool, poison := deadLettered(t, proj, "a", "b", "c")
	proj.fixed.Store(true)
	if err := projection.RetryDeadLetter(ctx, pool, "retry", poison[0].EventID); err != nil {
		t.Fatal(err)
	}
	if err := projection.DiscardDeadLetter(ctx, pool, "retry", poison[0].EventID); err != nil {
		t.Fatal(err)
	}
	if n, err := projection.DiscardAllDeadLetters(ctx, pool, "retry"); err != nil || n != 2 {
		t.Errorf("DiscardAllDeadLetters = %d, %v; want 2", n, err)
	}
	catchUp(t, pool, proj, 0, 1)
	for _, p := range poison {
		if n := applied(t, pool, p.EventID); n != 0 {
			t.Errorf("discarded event %d applied %d times, want 0", p.GlobalPosition, n)
		}
	}
	if err := projection.DiscardDeadLetter(ctx, pool, "retry", poison[0].EventID); !errors.Is(err, projection.ErrDeadLetterNotFound) {
		t.Errorf("discarding twice = %v, want ErrDeadLetterNotFound", err)
	}
}

// After a rescale a retry is applied by the aggregate's owner under the
// new topology, not by the partition that set it aside.
func TestDeadLetterRetryAfterRescale(t *testing.T) {
	ctx := t.Context()
	proj := &retryLog{}
	aggs := []string{"a", "b", "c", "d", "e", "f"}
	pool, poison := deadLettered(t, proj, aggs...)
	if _, err := projection.SetTopology(ctx, pool, "retry", 2); err != nil {
		t.Fatal(err)
	}
	proj.fixed.Store(true)
	if _, err := projection.RetryAllDeadLetters(ctx, pool, "retry"); err != nil {
		t.Fatal(err)
	}
	catchUp(t, pool, proj, 0, 2)
	for i, p := range poison {
		want := 0
		if projection.PartitionOf(aggs[i], 2) == 0 {
			want = 1
		}
		if n := applied(t, pool, p.EventID); n != want {
			t.Errorf("after partition 0's run, event of %q applied %d times, want %d", aggs[i], n, want)
		}
	}
	catchUp(t, pool, proj, 1, 2)
	for _, p := range poison {
		if n := applied(t, pool, p.EventID); n != 1 {
			t.Errorf("event %d applied %d times, want 1", p.GlobalPosition, n)
		}
	}
}

// A reset replays the whole log, dead-lettered events included: their dead
// letters must go with the checkpoints, or retrying one later would apply
// its event a second time.
func TestResetProjectionRemovesDeadLetters(t *testing.T) {
	ctx := t.Context()
	proj := &retryLog{}
	pool, _ := deadLettered(t, proj, "a", "b")
	if err := projection.ResetProjection(ctx, pool, "retry"); err != nil {
		t.Fatal(err)
	}
	if n, err := projection.CountDeadLetters(ctx, pool, "retry"); err != nil || n != 0 {
		t.Fatalf("CountDeadLetters after ResetProjection = %d, %v; want 0", n, err)
	}
}

// batchRetryLog is retryLog as a BatchProjection: a retry must go through
// HandleBatch, the path its batches take, and apply the event once.
type batchRetryLog struct {
	retryLog
	batchCalls atomic.Int64
}

func (r *batchRetryLog) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	r.batchCalls.Add(1)
	for i := range events {
		if err := r.Handle(ctx, tx, &events[i]); err != nil {
			return err
		}
	}
	return nil
}

func TestDeadLetterRetryThroughHandleBatch(t *testing.T) {
	ctx := t.Context()
	proj := &batchRetryLog{}
	pool, poison := deadLettered(t, &proj.retryLog, "a")
	proj.fixed.Store(true)
	if err := projection.RetryDeadLetter(ctx, pool, "retry", poison[0].EventID); err != nil {
		t.Fatal(err)
	}
	catchUp(t, pool, proj, 0, 1)
	if n := applied(t, pool, poison[0].EventID); n != 1 {
		t.Errorf("retried event applied %d times, want 1", n)
	}
	if proj.batchCalls.Load() == 0 {
		t.Error("the retry did not go through HandleBatch")
	}
	if n, err := projection.CountDeadLetters(ctx, pool, "retry"); err != nil || n != 0 {
		t.Errorf("CountDeadLetters after the retry = %d, %v; want 0", n, err)
	}
}
