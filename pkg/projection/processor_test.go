package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// applyLog records every event it handles in table applied, keyed by event
// id, so applying one twice fails loudly, together with the partition
// that applied it.
type applyLog struct {
	name string
	key  int
	// failOn, if set, makes Handle fail on that event type.
	failOn string
}

func (a applyLog) Name() string { return a.name }
func (a applyLog) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if a.failOn != "" && e.EventType == a.failOn {
		return errors.New("cannot handle " + e.EventType)
	}
	_, err := tx.Exec(ctx, "INSERT INTO applied (event_id, projection, partition_key, aggregate_id, aggregate_version) VALUES ($1, $2, $3, $4, $5)",
		e.EventID, a.name, a.key, e.AggregateID, e.AggregateVersion)
	return err
}

func newAppliedTable(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `CREATE TABLE applied (
		event_id uuid NOT NULL, projection text NOT NULL, partition_key int NOT NULL, aggregate_id text NOT NULL,
		aggregate_version bigint NOT NULL, seq bigserial, -- seq: the order events were applied in
		PRIMARY KEY (projection, event_id))`); err != nil {
		t.Fatal(err)
	}
}

// newAppliedStore is newStore with the applied table and the events of
// appendN(aggregates, perAggregate, aggType) already in the store.
func newAppliedStore(t *testing.T, aggregates, perAggregate int, aggType string) (*pgxpool.Pool, *projection.Store) {
	t.Helper()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, aggregates, perAggregate, aggType)
	return pool, store
}

func appendN(t *testing.T, pool *pgxpool.Pool, store *projection.Store, aggregates, perAggregate int, aggType string) {
	t.Helper()
	for a := range aggregates {
		evs := make([]projection.Event, perAggregate)
		for i := range evs {
			evs[i] = ev("Happened")
		}
		if _, err := store.Append(t.Context(), pool, aggType, fmt.Sprintf("%s-%d", aggType, a), projection.AnyVersion, evs...); err != nil {
			t.Fatal(err)
		}
	}
}

func queryInt(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	return pgtest.QueryValue[int](t, pool, sql, args...)
}

// The processor holds back behind an in-flight writer, then applies what it
// held back; nothing is skipped and the checkpoint is the pair it read.
func TestProcessorWaitsForInFlightWriter(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	proc := projection.NewProcessor(pool, store, projection.DefaultProcessorConfig())
	proj := applyLog{name: "log"}

	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	if _, err := store.Append(ctx, slow, "A", "late", projection.NoStream, ev("Late")); err != nil {
		t.Fatal(err)
	}
	appendN(t, pool, store, 5, 2, "B")

	// CatchUp must wait for the slow writer, since it committed nothing
	// yet; give up after a moment and look at what was applied meanwhile.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := proc.CatchUp(short, proj); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CatchUp behind an in-flight writer = %v, want it to wait until the deadline", err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 0 {
		t.Fatalf("applied %d events while an older writer was in flight, want 0", n)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := proc.CatchUp(ctx, proj); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 11 {
		t.Fatalf("applied %d events, want 11", n)
	}
	if n := queryInt(t, pool, "SELECT events_processed FROM projection_checkpoints WHERE projection_name = 'log'"); n != 11 {
		t.Fatalf("checkpoint counts %d events, want 11", n)
	}
}

// Four partitions together apply every event exactly once, each the share
// the hash assigns it.
func TestPartitionsApplyEachEventOnce(t *testing.T) {
	ctx := t.Context()
	pool, store := newAppliedStore(t, 200, 5, "User")

	var wg sync.WaitGroup
	errs := make([]error, 4)
	procs := make([]*projection.Processor, 4)
	for key := range 4 {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions, cfg.BatchSize = key, 4, 37
		procs[key] = projection.NewProcessor(pool, store, cfg)
		wg.Go(func() { errs[key] = procs[key].CatchUp(ctx, applyLog{name: "parts", key: key}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 1000 {
		t.Fatalf("applied %d events, want 1000", n)
	}
	for key := range 4 {
		want := 0
		for a := range 200 {
			if (projection.HashPartitionStrategy{}).ShouldProcess(fmt.Sprint("User-", a), key, 4) {
				want += 5
			}
		}
		if got := queryInt(t, pool, "SELECT count(*) FROM applied WHERE partition_key = $1", key); got != want {
			t.Errorf("partition %d applied %d events, want %d", key, got, want)
		}
		// The filter runs in SQL: a partition reads only its own rows.
		if st := procs[key].Stats(); st.EventsFetched != int64(want) || st.EventsHandled != int64(want) {
			t.Errorf("partition %d fetched %d and handled %d events, want %d of 1000", key, st.EventsFetched, st.EventsHandled, want)
		}
		if wrong := queryInt(t, pool, "SELECT count(*) FROM applied WHERE partition_key = $1 AND (SELECT partition_hash FROM events e WHERE e.event_id = applied.event_id) % 4 <> $1", key); wrong != 0 {
			t.Errorf("partition %d applied %d events of other partitions", key, wrong)
		}
	}
}

// CatchUp returns only once every event committed before the call is
// handled, even if an older transaction holds the horizon back for a while;
// cancelled first, it says so.
func TestCatchUpWaitsForEventsCommittedBeforeIt(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)

	// An unrelated transaction that has taken an xid holds the horizon
	// below everything appended after it.
	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback(ctx) }()
	if _, err := blocker.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	appendN(t, pool, store, 4, 5, "A")

	cfg := projection.DefaultProcessorConfig()
	cfg.PollInterval = 5 * time.Millisecond
	proc := projection.NewProcessor(pool, store, cfg)

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err = proc.CatchUp(short, applyLog{name: "catchup"})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "catching up") {
		t.Fatalf("CatchUp held back by an open transaction = %v, want it to report the deadline", err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 0 {
		t.Fatalf("applied %d events past the horizon", n)
	}

	done := make(chan error, 1)
	batches := proc.Stats().Batches
	go func() { done <- proc.CatchUp(ctx, applyLog{name: "catchup"}) }()
	// Release the horizon once CatchUp has run a batch held back by it.
	eventually(t, "a batch held back", func() bool { return proc.Stats().Batches > batches })
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 20 {
		t.Fatalf("CatchUp returned with %d of 20 events applied", n)
	}
	if st := proc.Stats(); st.EventsHandled != 20 || st.Batches == 0 || st.Horizon == 0 {
		t.Fatalf("stats after catching up: %+v", st)
	}
}

// regionStrategy is the guide's custom strategy: evaluated in Go.
type regionStrategy struct{}

func (regionStrategy) ShouldProcess(id string, key, total int) bool {
	switch {
	case strings.HasPrefix(id, "us-"):
		return key == 0
	case strings.HasPrefix(id, "eu-"):
		return key == 1
	}
	return projection.HashPartitionStrategy{}.ShouldProcess(id, key, total)
}

func TestCustomPartitionStrategy(t *testing.T) {
	ctx := t.Context()
	pool, store := newAppliedStore(t, 30, 2, "us")
	appendN(t, pool, store, 20, 2, "eu")
	appendN(t, pool, store, 50, 2, "xx")
	for key := range 3 {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions, cfg.BatchSize = key, 3, 16
		cfg.PartitionStrategy = regionStrategy{}
		if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "region", key: key}); err != nil {
			t.Fatal(err)
		}
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 200 {
		t.Fatalf("applied %d, want 200", n)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE aggregate_id LIKE 'us-%' AND partition_key <> 0"); n != 0 {
		t.Fatalf("%d us- events outside partition 0", n)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE aggregate_id LIKE 'eu-%' AND partition_key <> 1"); n != 0 {
		t.Fatalf("%d eu- events outside partition 1", n)
	}
}

type scoped struct {
	applyLog
	types, contexts []string
}

func (s scoped) AggregateTypes() []string  { return s.types }
func (s scoped) BoundedContexts() []string { return s.contexts }

func TestScopedProjection(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	billing := projection.NewStore(projection.WithBoundedContext("billing"))
	appendN(t, pool, store, 10, 1, "User")
	appendN(t, pool, store, 10, 1, "Order")
	appendN(t, pool, billing, 10, 1, "Invoice")
	appendN(t, pool, billing, 10, 1, "User")

	run := func(p scoped) {
		if err := projection.NewProcessor(pool, store, projection.DefaultProcessorConfig()).CatchUp(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	run(scoped{applyLog: applyLog{name: "users"}, types: []string{"User"}})
	run(scoped{applyLog: applyLog{name: "billing"}, contexts: []string{"billing"}})
	run(scoped{applyLog: applyLog{name: "billing_users"}, types: []string{"User"}, contexts: []string{"billing"}})
	run(scoped{applyLog: applyLog{name: "all"}})

	for name, want := range map[string]int{"users": 20, "billing": 20, "billing_users": 10, "all": 40} {
		if got := queryInt(t, pool, "SELECT count(*) FROM applied WHERE projection = $1", name); got != want {
			t.Errorf("projection %s applied %d events, want %d", name, got, want)
		}
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE projection = 'users' AND aggregate_id NOT LIKE 'User-%'"); n != 0 {
		t.Errorf("users projection applied %d non-User events", n)
	}
}

// A handler error rolls back the whole batch (read model and checkpoint)
// and names the event.
func TestHandlerErrorRollsBackBatch(t *testing.T) {
	ctx := t.Context()
	pool, store := newAppliedStore(t, 3, 1, "A")
	bad, err := store.Append(ctx, pool, "B", "poison", projection.NoStream, ev("Poison"))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, pool, store, 3, 1, "C")

	cfg := projection.DefaultProcessorConfig()
	cfg.BatchSize = 100
	err = projection.NewProcessor(pool, store, cfg).Run(ctx, applyLog{name: "strict", failOn: "Poison"})
	var he *projection.HandlerError
	if !errors.As(err, &he) {
		t.Fatalf("Run() = %v, want a *HandlerError", err)
	}
	if he.Projection != "strict" || he.EventID != bad[0].EventID || he.EventType != "Poison" ||
		he.Position != bad[0].Position() || he.AggregateID != "poison" {
		t.Fatalf("HandlerError = %+v, want it to name the poison event %+v", he, bad[0])
	}
	for _, want := range []string{`projection "strict"`, bad[0].EventID.String(), "Poison", fmt.Sprint("position ", bad[0].GlobalPosition), "cannot handle Poison"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 0 {
		t.Fatalf("%d read-model rows survived the failed batch, want 0", n)
	}
	if n := queryInt(t, pool, "SELECT coalesce(max(last_global_position), 0) FROM projection_checkpoints WHERE projection_name = 'strict'"); n != 0 {
		t.Fatalf("checkpoint moved to %d despite the failure", n)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	proctest.Eventually(t, 30*time.Second, 10*time.Millisecond, what, proctest.True(cond))
}

// Run follows new events, starts over when its checkpoint is deleted (the
// guide's rebuild), and returns nil when cancelled.
func TestRunFollowsRebuildsAndStops(t *testing.T) {
	pool, store := newAppliedStore(t, 10, 3, "A")

	ctx, cancel := context.WithCancel(t.Context())
	cfg := projection.DefaultProcessorConfig()
	cfg.PollInterval = 5 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- projection.NewProcessor(pool, store, cfg).Run(ctx, applyLog{name: "live"}) }()

	count := func() int { return queryInt(t, pool, "SELECT count(*) FROM applied") }
	eventually(t, "30 events applied", func() bool { return count() == 30 })
	appendN(t, pool, store, 5, 2, "B")
	eventually(t, "40 events applied", func() bool { return count() == 40 })

	// Rebuild by hand while running: clear the read model and the checkpoint.
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := projection.ResetProjection(t.Context(), tx, "live"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "TRUNCATE applied"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "40 events re-applied after rebuild", func() bool { return count() == 40 })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run() after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
