package projection_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// countByAggregate counts the events it handles per aggregate, in a table
// of the session's schema.
var countByAggregate = projection.Func("count_by_aggregate", func(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, `INSERT INTO aggregate_counts (aggregate_id, n) VALUES ($1, 1)
		ON CONFLICT (aggregate_id) DO UPDATE SET n = aggregate_counts.n + 1`, e.AggregateID)
	return err
})

// Two tenants' event stores in two schemas of one database, chosen by the
// connection string's search_path: the migrations create every table,
// function, trigger and view in the schema named, none in public; appends,
// plain INSERTs, a partitioned processor, the topology and the progress of
// one schema see nothing of the other's.
func TestSchemaOfChoice(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, s := range []string{"tenant_a", "tenant_b"} {
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+s); err != nil {
			t.Fatal(err)
		}
	}
	pools := map[string]*pgxpool.Pool{}
	for _, s := range []string{"tenant_a", "tenant_b"} {
		pool, err := pgxpool.New(ctx, pgtest.WithSearchPath(dsn, s))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if _, err := projection.Migrate(ctx, pool); err != nil {
			t.Fatalf("migrating %s: %v", s, err)
		}
		if _, err := pool.Exec(ctx, `CREATE TABLE aggregate_counts (aggregate_id text PRIMARY KEY, n int NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		pools[s] = pool
	}

	// Every object of the schema is in both tenants' schemas, none in public.
	objects := func(schema string) []string {
		rows, err := admin.Query(ctx, `
			SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind IN ('r', 'v') AND c.relname <> 'aggregate_counts'
			UNION ALL
			SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
			ORDER BY 1`, schema)
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	a, b, public := objects("tenant_a"), objects("tenant_b"), objects("public")
	if len(public) != 0 {
		t.Errorf("public holds %v, want nothing of projectionist's", public)
	}
	for _, want := range []string{"events", "projection_checkpoints", "projection_topology", "projection_dead_letters",
		"projection_lag", "projection_partition_hash", "projection_complete_reset", "projectionist_schema_migrations"} {
		if !slices.Contains(a, want) {
			t.Errorf("tenant_a lacks %s (has %v)", want, a)
		}
	}
	if !slices.Equal(a, b) {
		t.Errorf("tenant_a has %v, tenant_b %v: want the same objects", a, b)
	}

	// Tenant A: 30 events through the store and 6 plain INSERTs (the
	// trigger, resolved in A's schema, hashes them); tenant B: 5 events.
	store := projection.NewStore()
	appendTo := func(pool *pgxpool.Pool, aggregates, perAggregate int) {
		t.Helper()
		for i := range aggregates {
			evs := make([]projection.Event, perAggregate)
			for j := range evs {
				evs[j] = projection.Event{EventType: "Counted", Payload: []byte(`{}`)}
			}
			if _, err := store.Append(ctx, pool, "Counter", fmt.Sprintf("c-%d", i), projection.NoStream, evs...); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendTo(pools["tenant_a"], 10, 3)
	appendTo(pools["tenant_b"], 5, 1)
	for i := range 6 {
		if _, err := pools["tenant_a"].Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
			VALUES ('Counter', $1, 1, gen_random_uuid(), 'Counted', '{}')`, fmt.Sprintf("sql-%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	// Tenant A's projection in 3 partitions, caught up.
	for key := range 3 {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions = key, 3
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := projection.NewProcessor(pools["tenant_a"], store, cfg).CatchUp(cctx, countByAggregate)
		cancel()
		if err != nil {
			t.Fatalf("partition %d: %v", key, err)
		}
	}
	var aggregates, total int
	if err := pools["tenant_a"].QueryRow(ctx, `SELECT count(*), coalesce(sum(n), 0) FROM aggregate_counts`).Scan(&aggregates, &total); err != nil {
		t.Fatal(err)
	}
	if aggregates != 16 || total != 36 {
		t.Errorf("tenant_a's read model: %d aggregates, %d events; want 16, 36", aggregates, total)
	}
	pa, err := projection.GetProgress(ctx, pools["tenant_a"], "count_by_aggregate")
	if err != nil {
		t.Fatal(err)
	}
	if pa.Topology.TotalPartitions != 3 || pa.Lag != 0 || pa.HeadPosition != 36 {
		t.Errorf("tenant_a's progress: %d partitions, lag %d, head %d; want 3, 0, 36", pa.Topology.TotalPartitions, pa.Lag, pa.HeadPosition)
	}

	// Tenant B saw none of it: no topology, its own head, its read model
	// empty.
	pb, err := projection.GetProgress(ctx, pools["tenant_b"], "count_by_aggregate")
	if err != nil {
		t.Fatal(err)
	}
	if pb.Topology.TotalPartitions != 0 || pb.HeadPosition != 5 || pb.Lag != 0 {
		t.Errorf("tenant_b's progress: %d partitions, head %d, lag %d; want no topology, head 5", pb.Topology.TotalPartitions, pb.HeadPosition, pb.Lag)
	}
	if err := pools["tenant_b"].QueryRow(ctx, `SELECT count(*) FROM aggregate_counts`).Scan(&aggregates); err != nil || aggregates != 0 {
		t.Errorf("tenant_b's read model: %d rows (%v), want none", aggregates, err)
	}

	// A search_path naming no schema that exists is refused with a hint.
	pool, err := pgxpool.New(ctx, pgtest.WithSearchPath(dsn, "tenant_c"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = projection.Migrate(ctx, pool)
	if err == nil || !strings.Contains(err.Error(), "tenant_c") || !strings.Contains(err.Error(), "CREATE SCHEMA") {
		t.Errorf("migrating with search_path tenant_c: %v, want an error naming it and CREATE SCHEMA", err)
	}
}
