package runner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

// logProj inserts each event into its own table keyed by event id, so a
// double apply fails.
type logProj struct {
	name    string
	failOn  string
	handled atomic.Int64
}

func (p *logProj) Name() string { return p.name }
func (p *logProj) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if p.failOn != "" && e.EventType == p.failOn {
		return errors.New("refusing " + e.EventType)
	}
	p.handled.Add(1)
	_, err := tx.Exec(ctx, "INSERT INTO applied (projection, event_id) VALUES ($1, $2)", p.name, e.EventID)
	return err
}

func setup(t *testing.T, events int) (*pgxpool.Pool, *projection.Store) {
	t.Helper()
	pool := projectiontest.NewPool(t)
	if _, err := pool.Exec(t.Context(), "CREATE TABLE applied (projection text, event_id uuid, PRIMARY KEY (projection, event_id))"); err != nil {
		t.Fatal(err)
	}
	store := projection.NewStore()
	for i := range events {
		typ := "Happened"
		if i == events/2 {
			typ = "Poison"
		}
		if _, err := store.Append(t.Context(), pool, "A", fmt.Sprint("a-", i%40), projection.AnyVersion, projection.Event{EventType: typ}); err != nil {
			t.Fatal(err)
		}
	}
	return pool, store
}

func applied(t *testing.T, pool *pgxpool.Pool, name string) int {
	t.Helper()
	return pgtest.QueryValue[int](t, pool, "SELECT count(*) FROM applied WHERE projection = $1", name)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	proctest.Eventually(t, 30*time.Second, 10*time.Millisecond, what, proctest.True(cond))
}

func TestRunMultipleProjectionsIndependentCheckpoints(t *testing.T) {
	pool, store := setup(t, 200)
	fast, slow := &logProj{name: "fast"}, &logProj{name: "slow"}
	fastCfg, slowCfg := projection.DefaultProcessorConfig(), projection.DefaultProcessorConfig()
	fastCfg.BatchSize, slowCfg.BatchSize = 1000, 7
	fastCfg.PollInterval, slowCfg.PollInterval = 5*time.Millisecond, 5*time.Millisecond

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runner.RunMultipleProjections(ctx, pool, store, []runner.ProjectionConfig{
			{Projection: fast, ProcessorConfig: fastCfg},
			{Projection: slow, ProcessorConfig: slowCfg},
		})
	}()
	waitFor(t, "both projections caught up", func() bool { return applied(t, pool, "fast") == 200 && applied(t, pool, "slow") == 200 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunMultipleProjections after cancel = %v, want nil", err)
	}
	if rows := pgtest.QueryValue[int](t, pool, "SELECT count(*) FROM projection_checkpoints WHERE events_processed = 200"); rows != 2 {
		t.Fatalf("%d checkpoints at 200 events, want one per projection", rows)
	}
}

// The first failure stops every other projection and is returned, naming
// the projection that failed.
func TestRunMultipleProjectionsFailFast(t *testing.T) {
	pool, store := setup(t, 100)
	healthy, broken := &logProj{name: "healthy"}, &logProj{name: "broken", failOn: "Poison"}
	cfg := projection.DefaultProcessorConfig()
	cfg.PollInterval = 5 * time.Millisecond

	done := make(chan error, 1)
	go func() {
		done <- runner.RunMultipleProjections(t.Context(), pool, store, []runner.ProjectionConfig{
			{Projection: healthy, ProcessorConfig: cfg},
			{Projection: broken, ProcessorConfig: cfg},
		})
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("runner did not stop after a projection failed; the healthy one kept it running")
	}
	var he *projection.HandlerError
	if !errors.As(err, &he) || he.Projection != "broken" || !strings.Contains(err.Error(), `projection "broken"`) {
		t.Fatalf("runner error = %v, want the broken projection's HandlerError", err)
	}
	if n := applied(t, pool, "broken"); n >= 100 {
		t.Fatalf("broken projection applied %d events", n)
	}
}

func TestRunnerRejectsBadInput(t *testing.T) {
	pool, store := setup(t, 0)
	proc := projection.NewProcessor(pool, store, projection.DefaultProcessorConfig())
	bad := projection.DefaultProcessorConfig()
	bad.PartitionKey = 3
	tests := []struct {
		name    string
		run     func() error
		wantMsg string
	}{
		{"empty", func() error { return runner.New().Run(t.Context(), nil) }, "nothing to run"},
		{"empty catch-up", func() error { return runner.New().CatchUp(t.Context(), nil) }, "nothing to run"},
		{"empty supervised", func() error {
			return runner.New().RunSupervised(t.Context(), nil, projection.SupervisorConfig{})
		}, "nothing to run"},
		{"nil projection", func() error {
			return runner.New().Run(t.Context(), []runner.ProjectionRunner{{Processor: proc}})
		}, "runner 0: invalid processor config: projection is nil"},
		{"nil processor", func() error {
			return runner.New().Run(t.Context(), []runner.ProjectionRunner{{Projection: &logProj{name: "x"}}})
		}, `runner 0 (projection "x"): invalid processor config: processor is nil`},
		{"bad config", func() error {
			return runner.RunMultipleProjections(t.Context(), pool, store, []runner.ProjectionConfig{{Projection: &logProj{name: "x"}, ProcessorConfig: bad}})
		}, `projection "x": invalid processor config: PartitionKey is 3`},
		{"duplicate", func() error {
			c := projection.DefaultProcessorConfig()
			return runner.RunMultipleProjections(t.Context(), pool, store, []runner.ProjectionConfig{
				{Projection: &logProj{name: "x"}, ProcessorConfig: c}, {Projection: &logProj{name: "x"}, ProcessorConfig: c}})
		}, `runners 0 and 1 both run projection "x" partition 0`},
		{"zero partitions", func() error {
			return runner.RunProjectionPartitions(t.Context(), pool, store, &logProj{name: "x"}, 0)
		}, "partitions is 0, must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if !errors.Is(err, projection.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want an ErrInvalidConfig containing %q", err, tt.wantMsg)
			}
		})
	}
}

// One projection instance on four partitions in one process: every event
// applied once, with Handle called concurrently (run with -race).
func TestRunProjectionPartitions(t *testing.T) {
	pool, store := setup(t, 400)
	p := &logProj{name: "pool"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runner.RunProjectionPartitions(ctx, pool, store, p, 4) }()
	waitFor(t, "400 events applied", func() bool { return applied(t, pool, "pool") == 400 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunProjectionPartitions after cancel = %v", err)
	}
	if got := p.handled.Load(); got != 400 {
		t.Fatalf("Handle called %d times, want 400", got)
	}
	if parts := pgtest.QueryValue[int](t, pool, "SELECT count(*) FROM projection_checkpoints WHERE projection_name = 'pool' AND total_partitions = 4 AND events_processed > 0"); parts != 4 {
		t.Fatalf("%d partitions processed events, want 4", parts)
	}
}

// CatchUp returns once every runner has caught up, with every event applied
// by each projection (by one of its partitions).
func TestCatchUp(t *testing.T) {
	pool, store := setup(t, 300)
	one, split := &logProj{name: "one"}, &logProj{name: "split"}
	small := projection.ProcessorConfig{BatchSize: 7}
	p0 := projection.ProcessorConfig{PartitionKey: 0, TotalPartitions: 2}
	p1 := projection.ProcessorConfig{PartitionKey: 1, TotalPartitions: 2}
	err := runner.New().CatchUp(t.Context(), []runner.ProjectionRunner{
		{Projection: one, Processor: projection.NewProcessor(pool, store, small)},
		{Projection: split, Processor: projection.NewProcessor(pool, store, p0)},
		{Projection: split, Processor: projection.NewProcessor(pool, store, p1)},
	})
	if err != nil {
		t.Fatalf("CatchUp() = %v", err)
	}
	for _, name := range []string{"one", "split"} {
		if n := applied(t, pool, name); n != 300 {
			t.Errorf("projection %q applied %d events, want 300", name, n)
		}
	}
}

// CatchUp is fail-fast like Run, and RunSupervised does not retry a poison
// event.
func TestCatchUpAndRunSupervisedStopOnPoison(t *testing.T) {
	pool, store := setup(t, 50)
	for name, run := range map[string]func(r *runner.Runner, rs []runner.ProjectionRunner) error{
		"catch-up": func(r *runner.Runner, rs []runner.ProjectionRunner) error { return r.CatchUp(t.Context(), rs) },
		"supervised": func(r *runner.Runner, rs []runner.ProjectionRunner) error {
			return r.RunSupervised(t.Context(), rs, projection.SupervisorConfig{})
		},
	} {
		t.Run(name, func(t *testing.T) {
			strict := &logProj{name: "strict-" + name, failOn: "Poison"}
			err := run(runner.New(), []runner.ProjectionRunner{
				{Projection: strict, Processor: projection.NewProcessor(pool, store, projection.ProcessorConfig{})},
			})
			var he *projection.HandlerError
			if !errors.As(err, &he) || he.Projection != strict.name || he.EventType != "Poison" {
				t.Fatalf("err = %v, want a *HandlerError for the poison event", err)
			}
		})
	}
}

// The partitions of one process share one listening connection, and a
// partition that polls once an hour still handles events appended while
// it waits: their notifications wake it.
func TestRunProjectionPartitionsShareOneListener(t *testing.T) {
	pool, store := setup(t, 0)
	// Opt in at both ends: the database notifies, the processors listen.
	if _, err := pool.Exec(t.Context(), `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET projectionist.wakeups = on', current_database());
	END $$`); err != nil {
		t.Fatal(err)
	}
	pool.Reset() // sessions opened before the ALTER do not see it
	proj := &logProj{name: "p"}
	cfg := projection.DefaultProcessorConfig()
	cfg.Wakeups, cfg.PollInterval, cfg.WakeupPollInterval = projection.WakeupsListen, time.Hour, time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runner.RunProjectionPartitionsWithConfig(ctx, pool, store, proj, 4, cfg) }()
	listeners := func() int {
		return pgtest.QueryValue[int](t, pool, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN%'`)
	}
	waitFor(t, "a listening session", func() bool { return listeners() > 0 })
	for round := 1; round <= 3; round++ {
		for i := range 8 {
			if _, err := store.Append(t.Context(), pool, "A", fmt.Sprintf("a-%d-%d", round, i), projection.NoStream, projection.Event{EventType: "Happened"}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, fmt.Sprintf("round %d applied", round), func() bool { return applied(t, pool, "p") == 8*round })
	}
	if n := listeners(); n != 1 {
		t.Errorf("%d listening sessions for 4 partitions, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
