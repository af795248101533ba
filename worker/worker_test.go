package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// applyOnce records every event it handles in applied, keyed by event id,
// so that applying an event twice fails loudly. It fails on events of type
// "Poison". With a gate, Handle waits until the gate is closed (or, unless
// ignoreCtx, ctx ends), and entered is closed when it first waits.
type applyOnce struct {
	name      string
	gate      chan struct{}
	entered   chan struct{}
	enterOnce *sync.Once
	ignoreCtx bool
}

func (p applyOnce) Name() string { return p.name }

func (p applyOnce) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if p.gate != nil {
		p.enterOnce.Do(func() { close(p.entered) })
		if p.ignoreCtx {
			<-p.gate
		} else {
			select {
			case <-p.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if e.EventType == "Poison" {
		return errors.New("cannot digest this")
	}
	_, err := tx.Exec(ctx, "INSERT INTO applied (projection, event_id) VALUES ($1, $2)", p.name, e.EventID)
	return err
}

// gated returns an applyOnce whose Handle waits for its gate.
func gated(name string) applyOnce {
	return applyOnce{name: name, gate: make(chan struct{}), entered: make(chan struct{}), enterOnce: &sync.Once{}}
}

// newDatabase returns a migrated database with the applied table: its DSN
// and a pool on it for the test.
func newDatabase(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	return dsn, prepareDatabase(t, dsn)
}

// prepareDatabase migrates the database of dsn and creates the applied
// table, returning a pool on it for the test.
func prepareDatabase(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.OpenPool(t, dsn)
	if _, err := projection.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `CREATE TABLE applied (projection text, event_id uuid, PRIMARY KEY (projection, event_id))`); err != nil {
		t.Fatal(err)
	}
	return pool
}

// appendEvents appends events of the given types to a few aggregates.
func appendEvents(ctx context.Context, pool *pgxpool.Pool, types ...string) ([]projection.PersistedEvent, error) {
	store := projection.NewStore()
	var all []projection.PersistedEvent
	for i, typ := range types {
		evs, err := store.Append(ctx, pool, "Thing", "thing-"+strconv.Itoa(i%7), projection.AnyVersion, projection.Event{EventType: typ})
		if err != nil {
			return nil, err
		}
		all = append(all, evs...)
	}
	return all, nil
}

func mustAppend(t *testing.T, pool *pgxpool.Pool, types ...string) []projection.PersistedEvent {
	t.Helper()
	evs, err := appendEvents(t.Context(), pool, types...)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func repeat(typ string, n int) []string {
	types := make([]string, n)
	for i := range types {
		types[i] = typ
	}
	return types
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// running is a worker serving HTTP on a loopback port.
type running struct {
	w      *worker
	url    string
	cancel context.CancelFunc
	done   chan error
}

// start runs a worker with cfg, logging to the test, and stops it when the
// test ends.
func start(t *testing.T, cfg Config, projections ...projection.Projection) *running {
	t.Helper()
	if cfg.MetricsInterval == 0 {
		cfg.MetricsInterval = 20 * time.Millisecond // metrics that follow the test's steps
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: redactor(cfg.DatabaseURL).ReplaceAttr}))
	}
	w, err := newWorker(cfg, projections)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.run(ctx, ln) }()
	t.Cleanup(func() { _ = r.stop(t) }) // a test that cares about the error stops it itself
	return r
}

// stop cancels the worker's context and returns what run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t, "worker did not stop")
}

// wait returns what run returned once it has, failing the test with
// notStopped after a minute.
func (r *running) wait(t *testing.T, notStopped string) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for a later stop
		return err
	case <-time.After(time.Minute):
		t.Fatal(notStopped)
		return nil
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

// get returns the status and body of a GET, or 0 and the error.
func get(url string) (int, string) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(body)
}

// metric returns the value of a sample, such as
// projectionist_idle{partition="0",projection="p"}, from /metrics.
func (r *running) metric(sample string) (float64, bool) {
	_, body := get(r.url + "/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// sample names a metric of projection p in partition 0.
func sample(metric, p string) string {
	return fmt.Sprintf(`%s{partition="0",projection=%q}`, metric, p)
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	proctest.Eventually(t, time.Minute, 5*time.Millisecond, what, proctest.True(cond))
}

func TestReadinessAndMetrics(t *testing.T) {
	dsn, pool := newDatabase(t)
	const n = 25
	mustAppend(t, pool, repeat("Happened", n)...)
	proj := gated("counted")
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, BatchSize: 10, PollInterval: 10 * time.Millisecond}, proj)

	if code, body := get(r.url + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	<-proj.entered // the first batch is in flight and cannot complete
	code, body := get(r.url + "/readyz")
	if want := `projection "counted" partition 0: no batch completed yet`; code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
		t.Errorf("/readyz before the first batch = %d %q, want 503 %q", code, body, want)
	}
	waitFor(t, "the lag measured before the first batch", func() bool {
		lag, _ := r.metric(sample("projectionist_lag_events", "counted"))
		age, _ := r.metric(sample("projectionist_lag_seconds", "counted"))
		return lag == n && age > 0
	})
	if v, ok := r.metric("projectionist_database_up"); !ok || v != 1 {
		t.Errorf("projectionist_database_up = %v (found: %t), want 1", v, ok)
	}

	close(proj.gate)
	waitFor(t, "/readyz to answer 200", func() bool { code, _ := get(r.url + "/readyz"); return code == http.StatusOK })
	waitFor(t, "every event to be handled", func() bool {
		v, _ := r.metric(sample("projectionist_events_handled_total", "counted"))
		return v == n
	})
	if got := count(t, pool, "SELECT count(*) FROM applied"); got != n {
		t.Errorf("applied rows = %d, want %d", got, n)
	}

	waitFor(t, "the lag measured at 0 events and 0 s", func() bool {
		lag, _ := r.metric(sample("projectionist_lag_events", "counted"))
		age, ok := r.metric(sample("projectionist_lag_seconds", "counted"))
		return lag == 0 && age == 0 && ok
	})

	// Batches of 10: three with events, then empty polls.
	for s, want := range map[string]func(float64) bool{
		sample("projectionist_events_fetched_total", "counted"):                                 func(v float64) bool { return v == n },
		sample("projectionist_events_skipped_total", "counted"):                                 func(v float64) bool { return v == 0 },
		sample("projectionist_lag_sampled_timestamp_seconds", "counted"):                        func(v float64) bool { return v > 0 },
		"projectionist_database_up":                                                             func(v float64) bool { return v == 1 },
		"pgxpool_max_conns":                                                                     func(v float64) bool { return v >= 3 }, // the projection's, readiness', metrics'
		"pgxpool_acquire_count":                                                                 func(v float64) bool { return v > 0 },
		sample("projectionist_batches_total", "counted"):                                        func(v float64) bool { return v >= 3 },
		sample("projectionist_batch_duration_seconds_count", "counted"):                         func(v float64) bool { return v >= 3 },
		sample("projectionist_checkpoint_transaction_id", "counted"):                            func(v float64) bool { return v > 0 },
		sample("projectionist_topology_generation", "counted"):                                  func(v float64) bool { return v == 1 },
		sample("projectionist_topology_partitions", "counted"):                                  func(v float64) bool { return v == 1 },
		sample("projectionist_idle", "counted"):                                                 func(v float64) bool { return v == 0 },
		sample("projectionist_horizon_stall_seconds", "counted"):                                func(v float64) bool { return v >= 0 },
		`projectionist_events_poisoned_total{partition="0",policy="stop",projection="counted"}`: func(v float64) bool { return v == 0 },
	} {
		if v, ok := r.metric(s); !ok || !want(v) {
			t.Errorf("%s = %v (found: %t)", s, v, ok)
		}
	}

	// A write transaction left open holds every reader back: the horizon
	// stall shows it.
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(t.Context()) }()
	if _, err := tx.Exec(t.Context(), "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the horizon stall to show the open transaction", func() bool {
		v, _ := r.metric(sample("projectionist_horizon_stall_seconds", "counted"))
		return v > 0
	})
}

func TestIdlePartitionFollowsTopology(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, repeat("Happened", 20)...)
	r := start(t, Config{DatabaseURL: dsn, PartitionKey: 3, PollInterval: 10 * time.Millisecond}, applyOnce{name: "followed"})

	readyz := func(want string) func() bool {
		return func() bool {
			code, body := get(r.url + "/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, want)
		}
	}
	waitFor(t, "not ready: no topology", readyz(`projection "followed" partition 3: idle: the projection has no partition count in the database yet (set TOTAL_PARTITIONS on one worker, or create a Projection resource)`))

	if _, err := projection.SetTopology(t.Context(), pool, "followed", 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "not ready: outside the topology", readyz(`projection "followed" partition 3: idle: outside the topology (generation 1 has 2 partitions)`))
	if v, ok := r.metric(`projectionist_idle{partition="3",projection="followed"}`); v != 1 || !ok {
		t.Errorf("idle = %v (found: %t), want 1", v, ok)
	}
	waitFor(t, "the lag of the idle partition measured at 0", func() bool {
		v, ok := r.metric(`projectionist_lag_events{partition="3",projection="followed"}`)
		return v == 0 && ok
	})

	// The count grows: partition 3 resumes without a restart.
	if _, err := projection.SetTopology(t.Context(), pool, "followed", 4); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready once the topology includes partition 3", func() bool { code, _ := get(r.url + "/readyz"); return code == http.StatusOK })
	if v, _ := r.metric(`projectionist_topology_generation{partition="3",projection="followed"}`); v != 2 {
		t.Errorf("generation = %v, want 2", v)
	}
	want := count(t, pool, "SELECT count(*) FROM events WHERE partition_hash % 4 = 3")
	if want == 0 {
		t.Fatal("no event in partition 3 of 4: choose other aggregate ids")
	}
	waitFor(t, "partition 3's events to be applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == want })
}

func TestPoisonEventStops(t *testing.T) {
	dsn, pool := newDatabase(t)
	evs := mustAppend(t, pool, "Happened", "Happened", "Poison", "Happened")
	poison := evs[2]
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1}, applyOnce{name: "picky"})
	err := r.wait(t, "worker did not stop on a poison event")
	var herr *projection.HandlerError
	if !errors.As(err, &herr) {
		t.Fatalf("Run = %v, want a HandlerError", err)
	}
	for _, want := range []string{`projection "picky" partition 0`, poison.EventID.String(), "Poison",
		fmt.Sprintf("position %d", poison.GlobalPosition), "cannot digest this"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// The batch holding the poison event rolled back whole.
	if got := count(t, pool, "SELECT count(*) FROM applied"); got != 0 {
		t.Errorf("applied rows = %d, want 0", got)
	}
}

func TestPoisonEventSkipped(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, "Happened", "Poison", "Happened", "Poison", "Happened")
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, ErrorPolicy: projection.ErrorPolicyDeadLetter,
		PollInterval: 10 * time.Millisecond}, applyOnce{name: "lenient"})

	waitFor(t, "two events dead-lettered", func() bool {
		v, _ := r.metric(`projectionist_events_poisoned_total{partition="0",policy="dead-letter",projection="lenient"}`)
		return v == 2
	})
	if v, _ := r.metric(sample("projectionist_events_handled_total", "lenient")); v != 3 {
		t.Errorf("events handled = %v, want 3", v)
	}
	if got := count(t, pool, "SELECT count(*) FROM projection_dead_letters WHERE projection_name = 'lenient'"); got != 2 {
		t.Errorf("dead letters = %d, want 2", got)
	}
	waitFor(t, "ready", func() bool { code, _ := get(r.url + "/readyz"); return code == http.StatusOK })
}

func TestShutdownRollsBackBatchInFlight(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, "Happened")
	proj := gated("interrupted")
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1}, proj)
	<-proj.entered

	if err := r.stop(t); err != nil {
		t.Fatalf("run = %v, want nil", err)
	}
	if got := count(t, pool, "SELECT count(*) FROM applied"); got != 0 {
		t.Errorf("applied rows = %d, want 0: the batch in flight must roll back", got)
	}
	if got := count(t, pool, "SELECT count(*) FROM projection_checkpoints WHERE last_global_position > 0"); got != 0 {
		t.Errorf("checkpoints moved: %d", got)
	}
}

func TestShutdownTimeout(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, "Happened")
	proj := gated("stubborn")
	proj.ignoreCtx = true
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, ShutdownTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}, proj)
	<-proj.entered

	err := r.stop(t)
	if err == nil || !strings.Contains(err.Error(), "did not stop within the shutdown timeout of 100ms") {
		t.Errorf("run = %v, want a shutdown timeout", err)
	}
	close(proj.gate) // let the processor finish, then release its connection
	r.w.pool.Close()
}

func TestRunStopsWhenCancelled(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, repeat("Happened", 10)...)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{DatabaseURL: dsn, HTTPAddr: "127.0.0.1:0", TotalPartitions: 1, PollInterval: 10 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, applyOnce{name: "a"}, applyOnce{name: "b"})
	}()
	waitFor(t, "both projections to apply every event", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 20 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return")
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	a, b := applyOnce{name: "a"}, applyOnce{name: "b"}
	for _, tc := range []struct {
		cfg         Config
		projections []projection.Projection
		want        string
	}{
		{Config{Projections: []string{"a", "nope"}}, []projection.Projection{b, a},
			`invalid worker config: unknown projection "nope"; this worker has a, b`},
		{Config{}, nil, "invalid worker config: no projections to run"},
		{Config{}, []projection.Projection{a, a}, `invalid worker config: two projections are named "a"`},
		{Config{MetricsInterval: -time.Second}, []projection.Projection{a},
			"invalid worker config: MetricsInterval is -1s, must not be negative"},
		{Config{BatchSize: 20000}, []projection.Projection{a},
			`projection "a": invalid processor config: BatchSize is 20000, must be between 1 and 10000`},
		{Config{PartitionKey: 2, TotalPartitions: 2}, []projection.Projection{a},
			`projection "a": invalid processor config: PartitionKey is 2, must be in [0, 2) for TotalPartitions 2`},
		{Config{DatabaseURL: "postgres://alice:s3cret@db:x/app"}, []projection.Projection{a},
			"invalid worker config: DATABASE_URL: invalid database connection string: invalid port: must be a number between 1 and 65535"},
	} {
		err := Run(t.Context(), tc.cfg, tc.projections...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Run = %v, want %s", err, tc.want)
		}
		if !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, projection.ErrInvalidConfig) {
			t.Errorf("Run = %v, does not match ErrInvalidConfig", err)
		}
	}

	// No database named at all: the CLI's usage error, not a retry of a
	// local socket forever.
	for _, v := range []string{"PGHOST", "PGHOSTADDR", "PGSERVICE", "PGDATABASE"} {
		t.Setenv(v, "")
	}
	err := Run(t.Context(), Config{}, a)
	if !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, dbconn.ErrNoDatabase) ||
		!strings.HasPrefix(err.Error(), "invalid worker config: no database: set DATABASE_URL or pass --database-url") {
		t.Errorf("Run without a database = %v, want ErrInvalidConfig and ErrNoDatabase", err)
	}
}

// TestDatabaseLoss kills the worker's connections again and again while
// events are appended: the worker recovers by itself, readiness drops and
// comes back, and every event is applied exactly once (applied's primary
// key fails the batch, and with it the worker, on a second apply).
func TestDatabaseLoss(t *testing.T) {
	dsn, pool := newDatabase(t)
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, BatchSize: 10, PollInterval: 5 * time.Millisecond}, applyOnce{name: "survivor"})

	// Watch readiness, counting its drops.
	var ready atomic.Bool
	var drops atomic.Int64
	watchCtx, stopWatching := context.WithCancel(t.Context())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			code, _ := get(r.url + "/readyz")
			if now := code == http.StatusOK; now != ready.Swap(now) && !now {
				drops.Add(1)
			}
			time.Sleep(2 * time.Millisecond) // sampling /readyz to count its drops: no signal to wait on
		}
	}()

	appendCtx, stopAppending := context.WithCancel(t.Context())
	appended := make(chan error, 1)
	go func() {
		for appendCtx.Err() == nil {
			if _, err := appendEvents(appendCtx, pool, "Happened"); err != nil && appendCtx.Err() == nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()

	for i := range int64(3) {
		waitFor(t, "ready", ready.Load)
		applied := count(t, pool, "SELECT count(*) FROM applied")
		waitFor(t, "more events applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") > applied+20 })
		waitFor(t, "the worker's connections to be terminated", func() bool {
			return count(t, pool, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = 'projectionist-worker'`) > 0
		})
		waitFor(t, fmt.Sprintf("readiness drop %d", i+1), func() bool { return drops.Load() > i })
	}
	waitFor(t, "ready after the last loss", ready.Load)
	stopAppending()
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	// An append cut short by the cancel may still commit on the server
	// after its call returned, so the log is counted again, at the end,
	// in the same statement as the read model.
	waitFor(t, "every event applied", func() bool {
		return count(t, pool, "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT FROM applied a WHERE a.event_id = e.event_id)") == 0
	})
	stopWatching()
	<-watched

	var total, applied int64
	if err := pool.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM applied a JOIN events e USING (event_id))").Scan(&total, &applied); err != nil {
		t.Fatal(err)
	}
	if rows := int64(count(t, pool, "SELECT count(*) FROM applied")); applied != total || rows != total {
		t.Errorf("applied %d rows (%d of them events in the log) for %d events", rows, applied, total)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("run = %v, want nil", err)
	}
	t.Logf("%d events, %d readiness drops", total, drops.Load())
}

// TestProgramCollectorsAndVersion: a program's own collectors are served
// beside the worker's metrics, with the build information, and a collector
// that collides with another is a configuration error.
func TestProgramCollectorsAndVersion(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, "Happened")
	own := prometheus.NewCounter(prometheus.CounterOpts{Name: "shop_orders_total", Help: "Orders."})
	own.Add(3)
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, Collectors: []prometheus.Collector{own}, Version: "v1.2.3"},
		applyOnce{name: "p"})
	waitFor(t, "the event applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 1 })
	if v, ok := r.metric("shop_orders_total"); !ok || v != 3 {
		t.Errorf("shop_orders_total = %v (found %v), want 3", v, ok)
	}
	if v, ok := r.metric(fmt.Sprintf(`projectionist_build_info{goversion=%q,version="v1.2.3"}`, runtime.Version())); !ok || v != 1 {
		t.Errorf("projectionist_build_info with version v1.2.3 = %v (found %v), want 1", v, ok)
	}

	dup := prometheus.NewCounter(prometheus.CounterOpts{Name: "projectionist_batch_duration_seconds", Help: "Collides."})
	err := Run(t.Context(), Config{DatabaseURL: dsn, Collectors: []prometheus.Collector{dup}}, applyOnce{name: "p"})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "registering Collectors[0]") {
		t.Errorf("Run with a colliding collector = %v, want an ErrInvalidConfig naming Collectors[0]", err)
	}
}
