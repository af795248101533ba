package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// sums is a revenue-style read model: each partition adds every event's
// amount to its own row. Adding is not idempotent, so an event applied
// twice, or a reset that leaves rows behind, shows in the total.
type sums struct{ key int }

func (sums) Name() string { return "sums" }

func (s sums) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	var p struct{ Amount int64 }
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO sums (partition_key, events, total) VALUES ($1, 1, $2)
		ON CONFLICT (partition_key) DO UPDATE SET events = sums.events + 1, total = sums.total + EXCLUDED.total`, s.key, p.Amount)
	return err
}

// resettableSums is sums with a Reset hook that counts its calls; fail
// makes the hook clear the rows and then fail.
type resettableSums struct {
	sums
	calls *atomic.Int64
	fail  bool
}

func (r resettableSums) Reset(ctx context.Context, tx pgx.Tx) error {
	r.calls.Add(1)
	// Widen the window in which a second worker could get in.
	if _, err := tx.Exec(ctx, "SELECT pg_sleep(0.05)"); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "TRUNCATE sums"); err != nil {
		return err
	}
	if r.fail {
		return errors.New("read model is locked by a test")
	}
	return nil
}

func newSums(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `CREATE TABLE sums (partition_key int PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
}

func appendAmount(ctx context.Context, pool *pgxpool.Pool, store *projection.Store, aggregate string, amount int64) error {
	_, err := store.Append(ctx, pool, "Order", aggregate, projection.AnyVersion,
		projection.Event{EventType: "OrderPlaced", Payload: json.RawMessage(fmt.Sprintf(`{"Amount": %d}`, amount))})
	return err
}

// newCaughtUpSums is where the reset tests start: a database of the test's
// own with the sums read model, orders o-0 to o-(orders-1) of amount each,
// and a one-partition sums processor caught up with them.
func newCaughtUpSums(t *testing.T, orders int, amount int64) *pgxpool.Pool {
	t.Helper()
	pool, store := newStore(t, newSums)
	for i := range orders {
		if err := appendAmount(t.Context(), pool, store, fmt.Sprintf("o-%d", i), amount); err != nil {
			t.Fatal(err)
		}
	}
	catchUp(t, pool, sums{}, 0, 1)
	return pool
}

func sumsTotal(t *testing.T, pool *pgxpool.Pool) (events, total int) {
	t.Helper()
	return queryInt(t, pool, "SELECT coalesce(sum(events), 0) FROM sums"), queryInt(t, pool, "SELECT coalesce(sum(total), 0) FROM sums")
}

func sumsConfig(key, total int) projection.ProcessorConfig {
	cfg := projection.DefaultProcessorConfig()
	cfg.BatchSize, cfg.PollInterval = 7, 5*time.Millisecond
	cfg.PartitionKey, cfg.TotalPartitions = key, total
	return cfg
}

// A rebuild through the Reset hook is exact: with events appended all the
// while (before, during and after the reset), two partitions that each
// apply the pending reset and then run end with the read model equal to
// the sum of the events, though it was corrupted before the rebuild. The
// hook ran once, and the topology kept its partition count.
func TestApplyPendingResetIsExactUnderAppends(t *testing.T) {
	const partitions = 2
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pool, store := newStore(t, newSums)

	// The appender: every committed event's amount is counted.
	// It stops between appends, never during one, so that every
	// committed event is counted.
	var appended, appendedSum atomic.Int64
	var stopped atomic.Bool
	stopAppending := func() { stopped.Store(true) }
	appendDone := make(chan error, 1)
	go func() {
		for i := int64(1); !stopped.Load(); i++ {
			if err := appendAmount(ctx, pool, store, fmt.Sprintf("order-%d", i%37), i%100+1); err != nil {
				appendDone <- err
				return
			}
			appended.Add(1)
			appendedSum.Add(i%100 + 1)
		}
		appendDone <- nil
	}()

	var calls atomic.Int64
	// run starts one processor per partition, each applying a pending
	// reset first, as a worker does; stop waits until every partition
	// has returned from ApplyPendingReset (a partition cancelled inside
	// it fails with the context's error, which is not what this test
	// is about), then cancels them and waits.
	run := func() (stop func()) {
		runCtx, cancel := context.WithCancel(ctx)
		var wg, resetsApplied sync.WaitGroup
		errs := make(chan error, partitions)
		for key := range partitions {
			resetsApplied.Add(1)
			wg.Go(func() {
				p := resettableSums{sums: sums{key: key}, calls: &calls}
				_, err := projection.ApplyPendingReset(runCtx, pool, p)
				resetsApplied.Done()
				if err != nil {
					errs <- err
					return
				}
				if err := projection.NewProcessor(pool, store, sumsConfig(key, partitions)).Run(runCtx, p); err != nil {
					errs <- err
				}
			})
		}
		return func() {
			resetsApplied.Wait()
			cancel()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("partition: %v", err)
			}
		}
	}

	stop := run()
	eventually(t, "the first events applied", func() bool { n, _ := sumsTotal(t, pool); return n >= 50 })
	stop()
	before, err := projection.GetTopology(ctx, pool, "sums")
	if err != nil {
		t.Fatal(err)
	}
	// The bug the rebuild fixes.
	if _, err := pool.Exec(ctx, "UPDATE sums SET total = total + 1000000"); err != nil {
		t.Fatal(err)
	}
	if err := projection.RequestReset(ctx, pool, "sums", "rebuild-1"); err != nil {
		t.Fatal(err)
	}
	stop = run()
	eventually(t, "the replay to pass what was there before", func() bool {
		n, _ := sumsTotal(t, pool)
		return n >= 100 && calls.Load() == 1
	})
	stopAppending()
	if err := <-appendDone; err != nil {
		t.Fatalf("appending: %v", err)
	}
	stop()
	for key := range partitions {
		if err := projection.NewProcessor(pool, store, sumsConfig(key, partitions)).CatchUp(ctx, sums{key: key}); err != nil {
			t.Fatal(err)
		}
	}

	events, total := sumsTotal(t, pool)
	if int64(events) != appended.Load() || int64(total) != appendedSum.Load() {
		t.Errorf("read model has %d events summing to %d, want %d summing to %d", events, total, appended.Load(), appendedSum.Load())
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("Reset called %d times, want 1", n)
	}
	st, err := projection.GetResetStatus(ctx, pool, "sums")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Succeeded("rebuild-1") || st.Pending() || st.DoneBy == "" || st.DoneAt.IsZero() {
		t.Errorf("reset status = %+v, want rebuild-1 done, by someone", st)
	}
	after, err := projection.GetTopology(ctx, pool, "sums")
	if err != nil {
		t.Fatal(err)
	}
	if after.TotalPartitions != partitions || after.Generation != before.Generation+1 || after.ManagedBy != before.ManagedBy {
		t.Errorf("topology after the reset = %+v, want %d partitions, generation %d, managed as before (%+v)",
			after, partitions, before.Generation+1, before)
	}
}

// Workers racing for one pending reset do it once: one carries it out, the
// others wait for it on the request's row and find it done.
func TestApplyPendingResetRacingWorkersResetOnce(t *testing.T) {
	ctx := t.Context()
	pool := newCaughtUpSums(t, 20, 10)
	if err := projection.RequestReset(ctx, pool, "sums", "again"); err != nil {
		t.Fatal(err)
	}
	const workers = 8
	var calls atomic.Int64
	outcomes := make(chan projection.ResetOutcome, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			r, err := projection.ApplyPendingReset(ctx, pool, resettableSums{calls: &calls})
			if err != nil {
				t.Error(err)
			}
			outcomes <- r.Outcome
		})
	}
	wg.Wait()
	close(outcomes)
	var applied, none int
	for o := range outcomes {
		switch o {
		case projection.ResetApplied:
			applied++
		case projection.ResetNothingPending:
			none++
		}
	}
	if applied != 1 || none != workers-1 || calls.Load() != 1 {
		t.Errorf("%d workers applied the reset and %d found nothing pending; Reset called %d times: want 1, %d, 1",
			applied, none, calls.Load(), workers-1)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM sums"); n != 0 {
		t.Errorf("read model has %d rows after the reset, want 0", n)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM projection_checkpoints WHERE projection_name = 'sums'"); n != 0 {
		t.Errorf("%d checkpoints after the reset, want 0", n)
	}
	catchUp(t, pool, sums{}, 0, 1)
	if events, total := sumsTotal(t, pool); events != 20 || total != 200 {
		t.Errorf("replay: %d events summing to %d, want 20 summing to 200", events, total)
	}
}

// checkpointsOf is the projection's checkpoint rows, as text.
func checkpointsOf(t *testing.T, pool *pgxpool.Pool, name string) string {
	t.Helper()
	var s string
	if err := pool.QueryRow(t.Context(), `SELECT coalesce(string_agg(format('%s/%s@%s', partition_key, generation, last_global_position), ' '
		ORDER BY partition_key), '') FROM projection_checkpoints WHERE projection_name = $1`, name).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A projection without a Reset hook cannot be rebuilt declaratively: the
// request is recorded as failed with a message saying so, and neither the
// read model nor the checkpoints nor the topology are touched. The failure
// is final for that token: applying again, or requesting the same token
// again, changes nothing.
func TestApplyPendingResetWithoutHookRecordsError(t *testing.T) {
	ctx := t.Context()
	pool := newCaughtUpSums(t, 10, 5)
	cps, topo := checkpointsOf(t, pool, "sums"), mustTopology(t, pool, "sums")
	if err := projection.RequestReset(ctx, pool, "sums", "t1"); err != nil {
		t.Fatal(err)
	}
	r, err := projection.ApplyPendingReset(ctx, pool, sums{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != projection.ResetRefused || r.Token != "t1" || !errors.Is(r.Refusal, projection.ErrResetNotSupported) {
		t.Errorf("ApplyPendingReset = %+v, want refused t1 with ErrResetNotSupported", r)
	}
	st, err := projection.GetResetStatus(ctx, pool, "sums")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Failed("t1") || st.Pending() || !strings.Contains(st.Error, `projection "sums" (projection_test.sums) does not implement projection.Resetter: it cannot be rebuilt declaratively`) {
		t.Errorf("reset status = %+v, want t1 failed, saying why", st)
	}
	if events, total := sumsTotal(t, pool); events != 10 || total != 50 {
		t.Errorf("read model: %d events summing to %d, want it untouched (10, 50)", events, total)
	}
	if got := checkpointsOf(t, pool, "sums"); got != cps {
		t.Errorf("checkpoints %q, want them untouched: %q", got, cps)
	}
	if got := mustTopology(t, pool, "sums"); got != topo {
		t.Errorf("topology %+v, want it untouched: %+v", got, topo)
	}

	if err := projection.RequestReset(ctx, pool, "sums", "t1"); err != nil {
		t.Fatal(err)
	}
	if r, err := projection.ApplyPendingReset(ctx, pool, sums{}); err != nil || r.Outcome != projection.ResetNothingPending {
		t.Errorf("ApplyPendingReset after the same token again = %+v, %v; want nothing pending", r, err)
	}
	if err := projection.RequestReset(ctx, pool, "sums", "t2"); err != nil {
		t.Fatal(err)
	}
	if st, _ := projection.GetResetStatus(ctx, pool, "sums"); !st.Pending() || st.RequestedToken != "t2" {
		t.Errorf("after requesting t2: %+v, want t2 pending", st)
	}
}

func mustTopology(t *testing.T, pool *pgxpool.Pool, name string) projection.Topology {
	t.Helper()
	topo, err := projection.GetTopology(t.Context(), pool, name)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// A Reset hook that fails rolls the whole reset back: the rows it deleted
// are there again, the checkpoints too, and the request stays pending with
// the hook's error recorded, until a worker whose hook works does it.
func TestApplyPendingResetHookFailureRollsBack(t *testing.T) {
	ctx := t.Context()
	pool := newCaughtUpSums(t, 10, 3)
	cps := checkpointsOf(t, pool, "sums")
	if err := projection.RequestReset(ctx, pool, "sums", "t1"); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	if _, err := projection.ApplyPendingReset(ctx, pool, resettableSums{calls: &calls, fail: true}); err == nil ||
		!strings.Contains(err.Error(), "read model is locked by a test") {
		t.Fatalf("ApplyPendingReset with a failing hook = %v, want its error", err)
	}
	if events, total := sumsTotal(t, pool); events != 10 || total != 30 {
		t.Errorf("read model: %d events summing to %d, want it as before (10, 30)", events, total)
	}
	if got := checkpointsOf(t, pool, "sums"); got != cps {
		t.Errorf("checkpoints %q, want them as before: %q", got, cps)
	}
	st, err := projection.GetResetStatus(ctx, pool, "sums")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Pending() || !strings.Contains(st.LastError, "read model is locked by a test") {
		t.Errorf("reset status = %+v, want t1 still pending with the hook's error", st)
	}
	if r, err := projection.ApplyPendingReset(ctx, pool, resettableSums{calls: &calls}); err != nil || r.Outcome != projection.ResetApplied {
		t.Fatalf("ApplyPendingReset with a working hook = %+v, %v; want applied", r, err)
	}
	if st, _ := projection.GetResetStatus(ctx, pool, "sums"); !st.Succeeded("t1") || st.LastError != "" {
		t.Errorf("reset status = %+v, want t1 done, the last error cleared", st)
	}
}

// RequestReset is idempotent: the same token again keeps the request as
// it was.
func TestRequestResetIdempotent(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	if st, err := projection.GetResetStatus(ctx, pool, "x"); err != nil || st.Pending() || st.RequestedToken != "" {
		t.Fatalf("GetResetStatus of a projection never reset = %+v, %v; want zero", st, err)
	}
	for range 2 {
		if err := projection.RequestReset(ctx, pool, "x", "a"); err != nil {
			t.Fatal(err)
		}
	}
	first, _ := projection.GetResetStatus(ctx, pool, "x")
	if err := projection.RequestReset(ctx, pool, "x", "a"); err != nil {
		t.Fatal(err)
	}
	again, _ := projection.GetResetStatus(ctx, pool, "x")
	if !again.RequestedAt.Equal(first.RequestedAt) || !again.Pending() {
		t.Errorf("after requesting a again: %+v, want it unchanged: %+v", again, first)
	}
	for _, bad := range []string{"", strings.Repeat("x", projection.MaxResetTokenLength+1)} {
		if err := projection.RequestReset(ctx, pool, "x", bad); !errors.Is(err, projection.ErrInvalidConfig) {
			t.Errorf("RequestReset with a %d-byte token = %v, want ErrInvalidConfig", len(bad), err)
		}
	}
}
