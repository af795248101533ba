package projection_test

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// A partition index is built, listed, rebuilt after a failed build and
// dropped, and 64 partitions reading through it apply every event exactly
// once, in order, before and after it is dropped.
func TestPartitionIndex(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	const n, name = 64, "indexed"
	appendPlain(t, pool, 10)
	if _, err := projection.SetTopology(ctx, pool, name, n); err != nil {
		t.Fatal(err)
	}
	if ixs := partitionIndexes(t, pool); len(ixs) != 0 {
		t.Fatalf("before any build: partition indexes %+v, want none", ixs)
	}
	for _, bad := range []int{0, 1} {
		if _, err := projection.CreatePartitionIndex(ctx, pool, bad); !errors.Is(err, projection.ErrInvalidConfig) {
			t.Errorf("CreatePartitionIndex(%d) = %v, want ErrInvalidConfig", bad, err)
		}
	}
	for i, want := range []bool{true, false} { // the second call finds it valid
		if built, err := projection.CreatePartitionIndex(ctx, pool, n); err != nil || built != want {
			t.Fatalf("CreatePartitionIndex call %d = %v, %v, want built %v", i+1, built, err, want)
		}
	}
	ix := onlyPartitionIndex(t, pool)
	if ix.Partitions != n || ix.Name != projection.PartitionIndexName(n) || !ix.Valid || ix.Building ||
		ix.SizeBytes <= 0 || !slices.Equal(ix.UsedBy, []string{name}) {
		t.Fatalf("partition index %+v, want a valid %s of %d partitions used by %s", ix, projection.PartitionIndexName(n), n, name)
	}

	catchUpPartitions(t, pool, store, name, n)
	assertExactlyOnceInOrder(t, pool, name)
	// The reads went through the index: PostgreSQL preferred it to the
	// filter once the partitions had to examine 64 rows for each of
	// theirs.
	eventually(t, "reads through "+ix.Name, func() bool {
		return queryInt(t, pool, "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE indexrelname = $1", ix.Name) > 0
	})

	// What a failed or cancelled CREATE INDEX CONCURRENTLY leaves: an
	// index PostgreSQL maintains but no read may use.
	if _, err := pool.Exec(ctx, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass", ix.Name); err != nil {
		t.Fatal(err)
	}
	if ix := onlyPartitionIndex(t, pool); ix.Valid || ix.Building {
		t.Fatalf("after a failed build: %+v, want neither valid nor building", ix)
	}
	appendPlain(t, pool, 3)
	catchUpPartitions(t, pool, store, name, n)
	assertExactlyOnceInOrder(t, pool, name)
	if built, err := projection.CreatePartitionIndex(ctx, pool, n); err != nil || !built {
		t.Fatalf("rebuilding the invalid index: built %v, %v", built, err)
	}
	if ix := onlyPartitionIndex(t, pool); !ix.Valid {
		t.Fatalf("after rebuilding: %+v, want valid", ix)
	}

	if err := projection.DropPartitionIndex(ctx, pool, n); err != nil {
		t.Fatal(err)
	}
	if ixs := partitionIndexes(t, pool); len(ixs) != 0 {
		t.Fatalf("after dropping: partition indexes %+v, want none", ixs)
	}
	appendPlain(t, pool, 3)
	catchUpPartitions(t, pool, store, name, n)
	assertExactlyOnceInOrder(t, pool, name)
}

// appendPlain appends txs transactions of 1000 events, one to each of 1000
// aggregates, with plain INSERTs.
func appendPlain(t *testing.T, pool *pgxpool.Pool, txs int) {
	t.Helper()
	for range txs {
		if _, err := pool.Exec(t.Context(), `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
			SELECT 'A', 'agg-' || i, 1 + (SELECT count(*) FROM events) / 1000, gen_random_uuid(), 'E', '{}'
			FROM generate_series(1, 1000) AS i`); err != nil {
			t.Fatal(err)
		}
	}
}

// catchUpPartitions runs every partition of a projection of n partitions,
// following its topology, until it has caught up.
func catchUpPartitions(t *testing.T, pool *pgxpool.Pool, store *projection.Store, name string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for k := range n {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.Topology, cfg.BatchSize = k, projection.TopologyFollow, 100
		wg.Go(func() {
			errs[k] = projection.NewProcessor(pool, store, cfg).CatchUp(t.Context(), applyLog{name: name, key: k})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func partitionIndexes(t *testing.T, pool *pgxpool.Pool) []projection.PartitionIndex {
	t.Helper()
	ixs, err := projection.PartitionIndexes(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return ixs
}

func onlyPartitionIndex(t *testing.T, pool *pgxpool.Pool) projection.PartitionIndex {
	t.Helper()
	ixs := partitionIndexes(t, pool)
	if len(ixs) != 1 {
		t.Fatalf("partition indexes %+v, want one", ixs)
	}
	return ixs[0]
}

// Partition indexes belong to the events table the search_path finds: with
// tenant_a first on the path, tenant_b's index is neither listed nor
// dropped, though a bare DROP INDEX of its name would find it.
func TestPartitionIndexOfItsSchema(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.NewDatabase(t)
	pools := map[string]*pgxpool.Pool{}
	for _, path := range []string{"tenant_a", "tenant_b", "tenant_a,tenant_b"} {
		pool, err := pgxpool.New(ctx, pgtest.WithSearchPath(dsn, path))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		pools[path] = pool
	}
	for _, s := range []string{"tenant_a", "tenant_b"} {
		if _, err := pools[s].Exec(ctx, "CREATE SCHEMA "+s); err != nil {
			t.Fatal(err)
		}
		if _, err := projection.Migrate(ctx, pools[s]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := projection.CreatePartitionIndex(ctx, pools["tenant_b"], 8); err != nil {
		t.Fatal(err)
	}
	both := pools["tenant_a,tenant_b"]
	if ixs := partitionIndexes(t, both); len(ixs) != 0 {
		t.Errorf("tenant_a's partition indexes %+v, want none", ixs)
	}
	if err := projection.DropPartitionIndex(ctx, both, 8); err != nil {
		t.Fatal(err)
	}
	if ix := onlyPartitionIndex(t, pools["tenant_b"]); !ix.Valid {
		t.Errorf("tenant_b's partition index after a drop in tenant_a: %+v, want it valid", ix)
	}
	if err := projection.DropPartitionIndex(ctx, pools["tenant_b"], 8); err != nil {
		t.Fatal(err)
	}
	if ixs := partitionIndexes(t, pools["tenant_b"]); len(ixs) != 0 {
		t.Errorf("tenant_b's partition indexes after its drop: %+v, want none", ixs)
	}
}
