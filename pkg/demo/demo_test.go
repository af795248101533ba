package demo_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/projectionist/projectionist/internal/loadgen"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type failing struct{}

func (failing) Name() string { return "failing" }
func (failing) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error {
	return errors.New("boom")
}

// The examples' wait loop must return a projection's failure, not wait
// forever for a checkpoint that will never move.
func TestExampleHelperRunUntilProcessedReturnsFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := projectiontest.NewPool(t)
	if err := demo.CreateTables(ctx, pool, demo.ActivityLogSchema); err != nil {
		t.Fatal(err)
	}
	store := projection.NewStore()
	if _, err := demo.Seed(ctx, pool, store); err != nil {
		t.Fatal(err)
	}
	configs := []runner.ProjectionConfig{
		{Projection: &demo.ActivityLogProjection{}, ProcessorConfig: projection.DefaultProcessorConfig()},
		{Projection: failing{}, ProcessorConfig: projection.DefaultProcessorConfig()},
	}
	err := demo.RunUntilProcessed(ctx, pool, map[string]int64{"activity_log": demo.Events, "failing": demo.Events}, func(ctx context.Context) error {
		return runner.RunMultipleProjections(ctx, pool, store, configs)
	})
	var herr *projection.HandlerError
	if !errors.As(err, &herr) || herr.Projection != "failing" {
		t.Fatalf("got %v, want the failing projection's HandlerError", err)
	}
	if ctx.Err() != nil {
		t.Fatal("timed out")
	}
}

// Cancelling the caller's context stops the wait with its error.
func TestExampleHelperRunUntilProcessedCancelled(t *testing.T) {
	pool := projectiontest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := demo.RunUntilProcessed(ctx, pool, map[string]int64{"never": 1}, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}

func TestExampleHelperCountEvents(t *testing.T) {
	ctx := context.Background()
	pool := projectiontest.NewPool(t)
	store := projection.NewStore()
	if n, err := demo.Seed(ctx, pool, store); err != nil || n != demo.Events {
		t.Fatalf("Seed = %d, %v; want %d", n, err, demo.Events)
	}
	if n, err := demo.Seed(ctx, pool, store); err != nil || n != 0 {
		t.Fatalf("second Seed = %d, %v; want 0", n, err)
	}
	for _, tc := range []struct {
		types []string
		want  int64
	}{{nil, demo.Events}, {[]string{"User"}, demo.UserEvents}, {[]string{"Order"}, demo.OrderEvents}, {[]string{"User", "Order"}, demo.Events}} {
		if n, err := demo.CountEvents(ctx, pool, tc.types...); err != nil || n != tc.want {
			t.Errorf("CountEvents(%v) = %d, %v; want %d", tc.types, n, err, tc.want)
		}
	}
}

// migrated returns a pool on a fresh database of this test's own with the
// event store's tables and every demo read model.
func migrated(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := projectiontest.NewPool(t)
	if err := demo.EnsureSchema(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// catchUp runs every partition of proj, one after the other, under a
// topology of n partitions, until each has handled every event committed
// before it started.
func catchUp(t *testing.T, pool *pgxpool.Pool, proj projection.Projection, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for key := range n {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions, cfg.BatchSize = key, n, 50
		if err := projection.NewProcessor(pool, nil, cfg).CatchUp(ctx, proj); err != nil {
			t.Fatalf("partition %d of %d: %v", key, n, err)
		}
	}
}

func queryInt(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	return pgtest.QueryValue[int64](t, pool, sql, args...)
}

func generate(t *testing.T, pool *pgxpool.Pool, count, users int) loadgen.Result {
	t.Helper()
	res, err := loadgen.Generate(context.Background(), pool, loadgen.Options{Count: count, Aggregates: users, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestProjectionsOwnTheirSchemas(t *testing.T) {
	var names []string
	for _, p := range demo.Projections() {
		names = append(names, p.Name())
		if _, ok := p.(demo.SchemaOwner); !ok {
			t.Errorf("%s does not own its schema", p.Name())
		}
	}
	if diff := cmp.Diff([]string{"user_count", "revenue", "activity_log"}, names); diff != "" {
		t.Errorf("Projections() names (-want +got):\n%s", diff)
	}

	// Several processes starting at once all create the tables; the
	// advisory lock keeps CREATE TABLE IF NOT EXISTS from racing.
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	var eg errgroup.Group
	for range 8 {
		eg.Go(func() error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			return demo.EnsureSchema(ctx, conn)
		})
	}
	if err := eg.Wait(); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, table := range []string{"user_stats", "revenue", "activity_log"} {
		if queryInt(t, pool, "SELECT count(*) FROM pg_tables WHERE tablename = $1", table) != 1 {
			t.Errorf("table %s missing", table)
		}
	}
}

func TestUserCountProjection(t *testing.T) {
	pool := migrated(t)
	if _, err := demo.SeedUsers(context.Background(), pool, projection.NewStore()); err != nil {
		t.Fatal(err)
	}
	res := generate(t, pool, 300, 15)
	catchUp(t, pool, &demo.UserCountProjection{}, 2)
	users := int64(demo.Users + res.ByType[demo.EventUserCreated])
	active := users - 1 - int64(res.ByType[demo.EventUserDeactivated])
	if got := queryInt(t, pool, "SELECT count(*) FROM user_stats"); got != users {
		t.Errorf("user_stats has %d users, want %d", got, users)
	}
	if got := queryInt(t, pool, "SELECT count(*) FROM user_stats WHERE active"); got != active {
		t.Errorf("user_stats has %d active users, want %d", got, active)
	}
	if got := queryInt(t, pool, `SELECT count(*) FROM user_stats s JOIN events e
		ON e.aggregate_id = s.user_id AND e.event_type = 'UserCreated' AND e.payload->>'email' = s.email`); got != users {
		t.Errorf("%d users have their UserCreated email, want %d", got, users)
	}
}

// The revenue total is a non-idempotent running sum: exact only if every
// OrderPlaced is applied exactly once, here across partitions and a
// rescale.
func TestRevenueSumsExactly(t *testing.T) {
	pool := migrated(t)
	first := generate(t, pool, 800, 30)
	catchUp(t, pool, &demo.RevenueProjection{}, 3)
	second := generate(t, pool, 400, 30)
	catchUp(t, pool, &demo.RevenueProjection{}, 2)

	orders := int64(first.ByType[demo.EventOrderPlaced] + second.ByType[demo.EventOrderPlaced])
	cents := first.AmountCents + second.AmountCents
	if got := queryInt(t, pool, "SELECT sum(orders)::bigint FROM revenue"); got != orders {
		t.Errorf("revenue counts %d orders, want %d", got, orders)
	}
	if got := queryInt(t, pool, "SELECT sum(total_cents)::bigint FROM revenue"); got != cents {
		t.Errorf("revenue total is %d cents, want %d", got, cents)
	}
	// One row per partition key: the three partitions of the first run
	// each added to their own row.
	if got := queryInt(t, pool, "SELECT count(*) FROM revenue"); got != 3 {
		t.Errorf("revenue has %d rows, want one per partition key (3)", got)
	}
	if got := queryInt(t, pool, "SELECT sum((payload->>'amount_cents')::bigint)::bigint FROM events WHERE event_type = 'OrderPlaced'"); got != cents {
		t.Errorf("the log's OrderPlaced amounts sum to %d, the generator reported %d", got, cents)
	}
}

// activity_log records, for every event, the partition and generation that
// applied it and the order it was applied in.
func TestActivityLogRecordsPartitionAndGeneration(t *testing.T) {
	pool := migrated(t)
	generate(t, pool, 500, 40)
	catchUp(t, pool, &demo.ActivityLogProjection{}, 3)
	firstEnd := queryInt(t, pool, "SELECT max(global_position) FROM events")
	generate(t, pool, 300, 40)
	catchUp(t, pool, &demo.ActivityLogProjection{}, 2)

	if got, want := queryInt(t, pool, "SELECT count(*) FROM activity_log a JOIN events e USING (event_id)"), queryInt(t, pool, "SELECT count(*) FROM events"); got != want || want != 800 {
		t.Errorf("activity_log holds %d of the log's %d events, want all 800", got, want)
	}
	rows, err := pool.Query(context.Background(), `SELECT aggregate_id, partition_key, total_partitions, generation, global_position <= $1
		FROM activity_log`, firstEnd)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var key, total int32
	var gen int64
	var firstBatch bool
	perGeneration := map[int64]int{}
	_, err = pgx.ForEachRow(rows, []any{&id, &key, &total, &gen, &firstBatch}, func() error {
		perGeneration[gen]++
		wantTotal, wantGen := int32(2), int64(2)
		if firstBatch {
			wantTotal, wantGen = 3, 1
		}
		if total != wantTotal || gen != wantGen || int(key) != projection.PartitionOf(id, int(total)) {
			t.Errorf("%s applied by partition %d of %d, generation %d; want partition %d of %d, generation %d",
				id, key, total, gen, projection.PartitionOf(id, int(wantTotal)), wantTotal, wantGen)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[int64]int{1: 500, 2: 300}, perGeneration); diff != "" {
		t.Errorf("events per generation (-want +got):\n%s", diff)
	}
	// Ordered by the applied-order sequence, each aggregate's rows are its
	// versions 1, 2, 3, ...
	if got := queryInt(t, pool, `SELECT count(*) FROM (
		SELECT aggregate_version, row_number() OVER (PARTITION BY aggregate_type, aggregate_id ORDER BY seq) AS n
		FROM activity_log) x WHERE aggregate_version <> n`); got != 0 {
		t.Errorf("%d rows of activity_log are out of version order", got)
	}
}

// A duplicate apply is not absorbed: it stops the processor with the
// event's primary-key violation.
func TestActivityLogDuplicateFailsLoudly(t *testing.T) {
	ctx := context.Background()
	pool := migrated(t)
	generate(t, pool, 50, 5)
	catchUp(t, pool, &demo.ActivityLogProjection{}, 1)

	// Forget the checkpoint, as a botched rebuild that keeps the read
	// model would: every event is delivered again.
	if err := projection.ResetProjection(ctx, pool, "activity_log"); err != nil {
		t.Fatal(err)
	}
	err := projection.NewProcessor(pool, nil, projection.DefaultProcessorConfig()).CatchUp(ctx, &demo.ActivityLogProjection{})
	var herr *projection.HandlerError
	var pgErr *pgconn.PgError
	if !errors.As(err, &herr) || !errors.As(err, &pgErr) || pgErr.Code != "23505" || herr.Projection != "activity_log" {
		t.Fatalf("re-delivery: got %v, want a HandlerError from a unique violation", err)
	}
	if !strings.Contains(err.Error(), herr.EventID.String()) {
		t.Errorf("error %q does not name the event", err)
	}
	if got := queryInt(t, pool, "SELECT count(*) FROM activity_log"); got != 50 {
		t.Errorf("activity_log has %d rows after the failed re-delivery, want 50", got)
	}

	// Outside a processor's batch there is no partition to record.
	store := projection.NewStore()
	out, err := store.Append(ctx, pool, "User", "outside", projection.NoStream, projection.Event{EventType: "UserCreated"})
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return (&demo.ActivityLogProjection{}).Handle(ctx, tx, &out[0])
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := queryInt(t, pool, "SELECT count(*) FROM activity_log WHERE aggregate_id = 'outside' AND partition_key IS NULL AND generation IS NULL"); got != 1 {
		t.Errorf("event handled outside a batch: %d rows with NULL partition and generation, want 1", got)
	}
}
