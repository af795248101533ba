package projection_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// assertExactlyOnceInOrder checks the applied table against the log: every
// event applied exactly once (the primary key refuses a second apply, so
// count and set equality suffice) and each aggregate's events applied in
// version order.
func assertExactlyOnceInOrder(t *testing.T, pool *pgxpool.Pool, name string) {
	t.Helper()
	events := queryInt(t, pool, "SELECT count(*) FROM events")
	applied := queryInt(t, pool, "SELECT count(*) FROM applied WHERE projection = $1", name)
	if applied != events {
		t.Errorf("%s applied %d events, the log holds %d", name, applied, events)
	}
	missing := queryInt(t, pool, "SELECT count(*) FROM (SELECT event_id FROM events EXCEPT SELECT event_id FROM applied WHERE projection = $1) m", name)
	extra := queryInt(t, pool, "SELECT count(*) FROM (SELECT event_id FROM applied WHERE projection = $1 EXCEPT SELECT event_id FROM events) x", name)
	if missing != 0 || extra != 0 {
		t.Errorf("%s: %d events never applied, %d applied that are not in the log", name, missing, extra)
	}
	outOfOrder := queryInt(t, pool, `SELECT count(*) FROM (
		SELECT aggregate_version, lag(aggregate_version) OVER (PARTITION BY aggregate_id ORDER BY seq) AS prev
		FROM applied WHERE projection = $1) a WHERE prev IS NOT NULL AND prev > aggregate_version`, name)
	if outOfOrder != 0 {
		t.Errorf("%s: %d events applied before an earlier version of their aggregate", name, outOfOrder)
	}
}

// stopAfter applies events up to a global position and fails on the first
// one beyond it, so a processor with batch size 1 stops exactly there.
type stopAfter struct {
	applyLog
	last int64
}

func (s stopAfter) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if e.GlobalPosition > s.last {
		return errors.New("stop here")
	}
	return s.applyLog.Handle(ctx, tx, e)
}

// DESIGN.md's worked example: 2 -> 3 partitions with p0 at 1000 and p1 at
// 500. Reusing the old checkpoints would lose events 501..1000 of the
// aggregates that move from p1 to p0; the switch must apply each event once.
func TestRescaleWorkedExample(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	for i := range 1500 { // positions 1..1500, round-robin over 60 aggregates
		if _, err := store.Append(ctx, pool, "A", fmt.Sprint("a-", i%60), projection.AnyVersion, ev("E")); err != nil {
			t.Fatal(err)
		}
	}

	for key, last := range []int64{1000, 500} {
		cfg := projection.DefaultProcessorConfig()
		cfg.BatchSize, cfg.PartitionKey, cfg.TotalPartitions = 1, key, 2
		err := projection.NewProcessor(pool, store, cfg).Run(ctx, stopAfter{applyLog{name: "log", key: key}, last})
		var he *projection.HandlerError
		if !errors.As(err, &he) {
			t.Fatalf("partition %d: %v, want it to stop at the first event after %d", key, err, last)
		}
	}
	if p0 := queryInt(t, pool, "SELECT last_global_position FROM projection_checkpoints WHERE projection_name = 'log' AND partition_key = 0"); p0 > 1000 || p0 < 990 {
		t.Fatalf("test set-up: p0 at %d, want ~1000", p0)
	}
	// The events a naive reuse of checkpoints would lose exist.
	lost := 0
	for i := 500; i < 1000; i++ {
		id := fmt.Sprint("a-", i%60)
		if projection.PartitionOf(id, 2) == 1 && projection.PartitionOf(id, 3) == 0 {
			lost++
		}
	}
	if lost == 0 {
		t.Fatal("test set-up: no aggregate moves from p1 to p0; the example shows nothing")
	}

	// Each append is a transaction of its own, so read order is position
	// order. Every new partition starts at p1's checkpoint c1 and reads
	// its share of what follows; it skips the events p0 already applied:
	// those of old partition 0 up to p0's checkpoint c0.
	c1 := queryInt(t, pool, "SELECT last_global_position FROM projection_checkpoints WHERE projection_name = 'log' AND partition_key = 1")
	wantFetched := queryInt(t, pool, "SELECT count(*) FROM events WHERE global_position > $1", c1)
	wantSkipped := queryInt(t, pool, `SELECT count(*) FROM events WHERE partition_hash % 2 = 0 AND global_position > $1
		AND global_position <= (SELECT last_global_position FROM projection_checkpoints WHERE projection_name = 'log' AND partition_key = 0)`, c1)

	topo, err := projection.SetTopology(ctx, pool, "log", 3)
	if err != nil {
		t.Fatal(err)
	}
	if topo.Generation != 2 || topo.TotalPartitions != 3 {
		t.Fatalf("topology after switch = %+v, want generation 2 of 3 partitions", topo)
	}
	var fetched, skipped, handled int64
	for key := range 3 {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions = key, 3
		proc := projection.NewProcessor(pool, store, cfg)
		if err := proc.CatchUp(ctx, applyLog{name: "log", key: key}); err != nil {
			t.Fatal(err)
		}
		st := proc.Stats()
		fetched, skipped, handled = fetched+st.EventsFetched, skipped+st.EventsSkipped, handled+st.EventsHandled
	}
	assertExactlyOnceInOrder(t, pool, "log")
	if wantSkipped == 0 {
		t.Fatal("test set-up: nothing to skip; the frontier is not exercised")
	}
	if fetched != int64(wantFetched) || skipped != int64(wantSkipped) || handled != fetched-skipped {
		t.Errorf("new generation fetched %d, skipped %d, handled %d events; want %d fetched, %d skipped (applied by generation 1), %d handled",
			fetched, skipped, handled, wantFetched, wantSkipped, wantFetched-wantSkipped)
	}
	// All three are past the old generation's highest checkpoint: a
	// switch back prunes the spent frontier entry.
	if _, err := projection.SetTopology(ctx, pool, "log", 2); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM projection_frontier WHERE projection_name = 'log' AND generation = 1"); n != 0 {
		t.Errorf("%d frontier rows of generation 1 remain after every checkpoint passed them", n)
	}
}

func TestSetTopologyIdempotentAndValidated(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	if _, err := projection.GetTopology(ctx, pool, "p"); !errors.Is(err, projection.ErrNoTopology) {
		t.Fatalf("GetTopology before any = %v, want ErrNoTopology", err)
	}
	first, err := projection.SetTopology(ctx, pool, "p", 4)
	if err != nil {
		t.Fatal(err)
	}
	again, err := projection.SetTopology(ctx, pool, "p", 4)
	if err != nil || again != first || first.Generation != 1 || first.TotalPartitions != 4 {
		t.Fatalf("SetTopology twice: %+v then %+v (%v), want generation 1 of 4 both times", first, again, err)
	}
	for _, n := range []int{0, -1, projection.MaxPartitions + 1} {
		if _, err := projection.SetTopology(ctx, pool, "p", n); !errors.Is(err, projection.ErrInvalidConfig) {
			t.Errorf("SetTopology(%d) = %v, want ErrInvalidConfig", n, err)
		}
	}
	if got, err := projection.GetTopology(ctx, pool, "p"); err != nil || got != first {
		t.Fatalf("topology after rejected calls = %+v (%v), want %+v", got, err, first)
	}
}

// A following processor whose key is outside the topology idles, and
// resumes when the count grows, without restarting.
func TestFollowingPartitionIdlesAndResumes(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 40, 2, "A")
	if _, err := projection.SetTopology(ctx, pool, "follow", 2); err != nil {
		t.Fatal(err)
	}

	procs := make([]*projection.Processor, 4)
	done := make(chan error, 4)
	for key := range procs {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.Topology, cfg.PollInterval = key, projection.TopologyFollow, 5*time.Millisecond
		procs[key] = projection.NewProcessor(pool, store, cfg)
		go func() { done <- procs[key].Run(ctx, applyLog{name: "follow", key: key}) }()
	}
	eventually(t, "keys 0 and 1 apply everything, keys 2 and 3 idle", func() bool {
		return queryInt(t, pool, "SELECT count(*) FROM applied") == 80 && procs[2].Stats().Idle && procs[3].Stats().Idle
	})
	if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE partition_key >= 2"); n != 0 {
		t.Fatalf("idle partitions applied %d events", n)
	}

	if _, err := projection.SetTopology(ctx, pool, "follow", 4); err != nil {
		t.Fatal(err)
	}
	appendN(t, pool, store, 40, 1, "B")
	eventually(t, "all four partitions working on generation 2", func() bool {
		for _, p := range procs {
			if st := p.Stats(); st.Idle || st.Generation != 2 {
				return false
			}
		}
		return queryInt(t, pool, "SELECT count(*) FROM applied") == 120
	})
	if n := queryInt(t, pool, "SELECT count(DISTINCT partition_key) FROM applied WHERE aggregate_id LIKE 'B-%'"); n != 4 {
		t.Errorf("new events went to %d partitions, want 4", n)
	}
	cancel()
	for range procs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	assertExactlyOnceInOrder(t, pool, "follow")
}

// The protocol under load: appenders keep writing while the partition
// count goes through 1 -> 4 -> 8 -> 3 -> 5 -> 1 and random steps, and
// processors (following, as the operator runs them) are stopped mid-batch
// and restarted at random. Every event is applied exactly once, in order,
// by per-event and by batch handlers (whose batches must never hold an
// event the frontier skips: applied's primary key would refuse it).
func TestRescaleRandomizedUnderLoad(t *testing.T) {
	t.Run("handler=event", func(t *testing.T) { testRescaleRandomizedUnderLoad(t, false, false) })
	t.Run("handler=batch", func(t *testing.T) { testRescaleRandomizedUnderLoad(t, true, false) })
	// With a partition index for every count, partitions read in the
	// form the index serves: the same rows, batch after batch, across
	// every switch.
	t.Run("handler=event/reads=index", func(t *testing.T) { testRescaleRandomizedUnderLoad(t, false, true) })
}

func testRescaleRandomizedUnderLoad(t *testing.T, batch, indexes bool) {
	pool, store := newStore(t, newAppliedTable)
	if indexes {
		for n := projection.MinPartitionIndexPartitions; n <= 8; n++ {
			if _, err := projection.CreatePartitionIndex(t.Context(), pool, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rng := rand.New(rand.NewPCG(7, 11))

	var appended atomic.Int64
	appendCtx, stopAppending := context.WithCancel(ctx)
	var appenders sync.WaitGroup
	for w := range 3 {
		appenders.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for appendCtx.Err() == nil {
				id := fmt.Sprint("agg-", r.IntN(150))
				if _, err := store.Append(appendCtx, pool, "A", id, projection.AnyVersion, ev("E"), ev("E")); err == nil {
					appended.Add(2)
				}
				time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond) // chaos: appends at random moments
			}
		})
	}

	const keys = 8
	type worker struct {
		cancel context.CancelFunc
		done   chan error
	}
	workers := make([]worker, keys)
	start := func(key int) {
		wctx, wcancel := context.WithCancel(ctx)
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.Topology = key, projection.TopologyFollow
		cfg.BatchSize, cfg.PollInterval = 1+rng.IntN(20), 2*time.Millisecond
		done := make(chan error, 1)
		var proj projection.Projection = applyLog{name: "random", key: key}
		if batch {
			proj = &batchApplyLog{applyLog: applyLog{name: "random", key: key}}
		}
		go func() {
			done <- projection.NewProcessor(pool, store, cfg).Run(wctx, proj)
		}()
		workers[key] = worker{wcancel, done}
	}
	stop := func(key int) {
		workers[key].cancel()
		if err := <-workers[key].done; err != nil {
			t.Errorf("partition %d: %v", key, err)
		}
	}
	for k := range keys {
		start(k)
	}

	sequence := []int{1, 4, 8, 3, 5, 1}
	for range 6 {
		sequence = append(sequence, 1+rng.IntN(keys))
	}
	for _, n := range sequence {
		if _, err := projection.SetTopology(ctx, pool, "random", n); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(150 * time.Millisecond)
		for time.Now().Before(deadline) {
			k := rng.IntN(keys)
			stop(k) // cancelled mid-batch: that batch rolls back
			start(k)
			time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond) // chaos: restarts at random moments
		}
	}
	stopAppending()
	appenders.Wait()
	if appended.Load() < 200 {
		t.Fatalf("test set-up: only %d events appended during the rescales", appended.Load())
	}
	eventually(t, "every event applied", func() bool {
		return queryInt(t, pool, "SELECT count(*) FROM applied") >= queryInt(t, pool, "SELECT count(*) FROM events")
	})
	for k := range keys {
		stop(k)
	}
	assertExactlyOnceInOrder(t, pool, "random")
	t.Logf("%d events, partition counts %v", appended.Load(), sequence)
}

// EventsProcessed counts across switches, which replace the checkpoint rows.
func TestEventsProcessedAcrossSwitches(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	for i, n := range []int{2, 3, 1} {
		appendN(t, pool, store, 10, 1, fmt.Sprint("G", i))
		for key := range n {
			cfg := projection.DefaultProcessorConfig()
			cfg.PartitionKey, cfg.TotalPartitions = key, n
			if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "count", key: key}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := projection.EventsProcessed(ctx, pool, "count")
		if err != nil || got != int64(10*(i+1)) {
			t.Fatalf("after generation with %d partitions: EventsProcessed = %d (%v), want %d", n, got, err, 10*(i+1))
		}
	}
}
