package projection_test

// Benchmarks of the event store's write path and the processor's read path.
//
// The processing benchmarks share one fixture per top-level benchmark:
// benchEvents events over benchAggregates aggregates, written once by the
// parent benchmark, before its sub-benchmarks run. Each iteration then
// processes the whole log from scratch (checkpoints deleted, read model
// emptied, both outside the timer) and events/s is computed from the time
// spent in CatchUp only.
//
//	go test ./pkg/projection/ -run '^$' -bench . -benchtime 3x -count 3

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

const (
	benchEvents     = 100_000
	benchAggregates = 1_000
	// benchTxEvents events are written per seeding transaction (one event
	// per aggregate), so the log spans benchEvents/benchTxEvents
	// transaction ids, interleaving all aggregates like a busy system's.
	benchTxEvents = benchAggregates
)

// benchAggregateIDs returns the fixture's aggregate ids and their partition
// hashes, computed in Go exactly as [projection.Store.Append] does.
func benchAggregateIDs() ([]string, []int64) {
	ids := make([]string, benchAggregates)
	hashes := make([]int64, benchAggregates)
	for i := range ids {
		ids[i] = fmt.Sprintf("order-%06d", i)
		hashes[i] = int64(projection.PartitionHash(ids[i]))
	}
	return ids, hashes
}

// seedSQL writes version $1 of every aggregate in one statement, filling
// the same columns as Store.Append. The payload is compact JSON of about 80
// bytes, as json.Marshal writes it, such as
// {"order_id":"order-000042","sku":"SKU-01234","quantity":3,"unit_price_cents":1299}.
const seedSQL = `
INSERT INTO events (bounded_context, aggregate_type, aggregate_id, aggregate_version,
                    event_id, event_type, event_version, payload, metadata, created_at, partition_hash)
SELECT '', 'Order', a.id, $1::bigint, gen_random_uuid(), 'OrderLineAdded', 1,
       format('{"order_id":"%s","sku":"SKU-%s","quantity":%s,"unit_price_cents":%s}',
              a.id, lpad(((a.ord * 7919 + $1::bigint * 104729) % 100000)::text, 5, '0'),
              1 + (a.ord + $1::bigint) % 9, 99 + (a.ord * 31 + $1::bigint * 17) % 9900)::json,
       '{}'::json, now(), a.hash
FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS a(id, hash, ord)
ORDER BY a.ord`

// newBenchLog returns a pool on a fresh database holding the fixture log.
// It takes one or two seconds, so call it once per top-level benchmark.
func newBenchLog(b *testing.B) *pgxpool.Pool {
	b.Helper()
	ctx := context.Background()
	pool := newPool(b)
	ids, hashes := benchAggregateIDs()
	for v := 1; v <= benchEvents/benchTxEvents; v++ {
		// Each Exec is its own transaction: one transaction id per version.
		if _, err := pool.Exec(ctx, seedSQL, v, ids, hashes); err != nil {
			b.Fatalf("seeding events: %v", err)
		}
	}
	// Set hint bits and the visibility map, and give the planner
	// statistics, so the first timed iteration is not the odd one out.
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) events"); err != nil {
		b.Fatalf("vacuuming events: %v", err)
	}
	var n int
	var avgPayload float64
	if err := pool.QueryRow(ctx, "SELECT count(*), avg(octet_length(payload::text)) FROM events").Scan(&n, &avgPayload); err != nil {
		b.Fatal(err)
	}
	if n != benchEvents {
		b.Fatalf("seeded %d events, want %d", n, benchEvents)
	}
	b.Logf("seeded %d events over %d aggregates, average payload %.0f bytes", n, benchAggregates, avgPayload)
	return pool
}

// resetProjection makes the next CatchUp start from the beginning of the
// log: it resets every projection (checkpoints, topology, frontier) and
// empties the given read-model tables.
func resetProjection(b *testing.B, pool *pgxpool.Pool, tables ...string) {
	b.Helper()
	ctx := context.Background()
	for _, name := range []string{"bench_noop", "bench_upsert"} {
		if err := projection.ResetProjection(ctx, pool, name); err != nil {
			b.Fatal(err)
		}
	}
	for _, t := range tables {
		if _, err := pool.Exec(ctx, "TRUNCATE "+pgx.Identifier{t}.Sanitize()); err != nil {
			b.Fatalf("truncating %s: %v", t, err)
		}
	}
}

// reportEventsPerSecond reports throughput over the timed part of the loop.
func reportEventsPerSecond(b *testing.B, eventsPerOp int) {
	b.ReportMetric(float64(eventsPerOp*b.N)/b.Elapsed().Seconds(), "events/s")
}

// countingProjection does nothing with an event but count it. The count is
// the number of rows its partition fetched, since the hash strategy filters
// in SQL and the processor hands every fetched row to Handle.
type countingProjection struct {
	handled atomic.Int64
}

func (*countingProjection) Name() string { return "bench_noop" }

func (p *countingProjection) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error {
	p.handled.Add(1)
	return nil
}

// upsertProjection keeps one counter per aggregate, the commonest shape of
// read model: one round trip per event, in the batch's transaction.
type upsertProjection struct{}

func (upsertProjection) Name() string { return "bench_upsert" }

func (upsertProjection) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, upsertSQL, e.AggregateID)
	return err
}

const upsertSQL = `
	INSERT INTO bench_order_counts AS t (aggregate_id, n) VALUES ($1, 1)
	ON CONFLICT (aggregate_id) DO UPDATE SET n = t.n + 1`

// batchUpsertProjection keeps the same counters as upsertProjection, as a
// BatchProjection: it counts each aggregate's events in Go and writes the
// batch in one multi-row upsert. The counts must be summed first, since
// one INSERT ... ON CONFLICT may not touch a row twice; the ids are sorted
// so that concurrent batches lock rows in one order.
type batchUpsertProjection struct{ upsertProjection }

func (p batchUpsertProjection) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	counts := make(map[string]int64, len(events))
	for i := range events {
		counts[events[i].AggregateID]++
	}
	ids := slices.Sorted(maps.Keys(counts))
	ns := make([]int64, len(ids))
	for i, id := range ids {
		ns[i] = counts[id]
	}
	_, err := tx.Exec(ctx, batchUpsertSQL, ids, ns)
	return err
}

const batchUpsertSQL = `
	INSERT INTO bench_order_counts AS t (aggregate_id, n)
	SELECT * FROM unnest($1::text[], $2::bigint[])
	ON CONFLICT (aggregate_id) DO UPDATE SET n = t.n + EXCLUDED.n`

func benchConfig(batchSize, key, total int) projection.ProcessorConfig {
	cfg := projection.DefaultProcessorConfig()
	cfg.BatchSize = batchSize
	cfg.PartitionKey = key
	cfg.TotalPartitions = total
	return cfg
}

// BenchmarkProcessNoop measures the processor's own cost: reading, scanning,
// checkpointing and committing, with a projection that does nothing.
func BenchmarkProcessNoop(b *testing.B) {
	pool := newBenchLog(b)
	store := projection.NewStore()
	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			proc := projection.NewProcessor(pool, store, benchConfig(batch, 0, 1))
			for b.Loop() {
				b.StopTimer()
				resetProjection(b, pool)
				proj := &countingProjection{}
				b.StartTimer()
				if err := proc.CatchUp(ctx, proj); err != nil {
					b.Fatal(err)
				}
				if n := proj.handled.Load(); n != benchEvents {
					b.Fatalf("handled %d events, want %d", n, benchEvents)
				}
			}
			reportEventsPerSecond(b, benchEvents)
		})
	}
}

// BenchmarkProcessUpsert measures a realistic projection: a counter per
// aggregate in a read model, in batches of 1000, written with one upsert
// per event (Handle) or one multi-row upsert per batch (HandleBatch).
func BenchmarkProcessUpsert(b *testing.B) {
	pool := newBenchLog(b)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_order_counts (aggregate_id text PRIMARY KEY, n bigint NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	store := projection.NewStore()
	// The read model must hold every event exactly once.
	checkCounts := func(b *testing.B) {
		b.Helper()
		var rows, total int64
		if err := pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(n), 0) FROM bench_order_counts").Scan(&rows, &total); err != nil {
			b.Fatal(err)
		}
		if rows != benchAggregates || total != benchEvents {
			b.Fatalf("read model has %d aggregates and %d events, want %d and %d", rows, total, benchAggregates, benchEvents)
		}
	}
	// One upsert per event (Handle), or one per batch (HandleBatch).
	for _, bc := range []struct {
		name string
		proj projection.Projection
	}{
		{"batch=1000", upsertProjection{}},
		{"handler=batch", batchUpsertProjection{}}, // also batches of 1000
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			proc := projection.NewProcessor(pool, store, benchConfig(1000, 0, 1))
			for b.Loop() {
				b.StopTimer()
				resetProjection(b, pool, "bench_order_counts")
				b.StartTimer()
				if err := proc.CatchUp(ctx, bc.proj); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportEventsPerSecond(b, benchEvents)
			checkCounts(b)
		})
	}
	// The same upserts in the same transactions, sent straight through
	// pgx without reading any event: the ceiling for any processor on this
	// machine, set by the round trip each event costs. Compare the two,
	// not just the absolute figure, which follows the host's latency.
	b.Run("baseline=bare-upserts", func(b *testing.B) {
		ids, _ := benchAggregateIDs()
		for b.Loop() {
			b.StopTimer()
			resetProjection(b, pool, "bench_order_counts")
			b.StartTimer()
			for range benchEvents / benchTxEvents {
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					for _, id := range ids {
						if _, err := tx.Exec(ctx, upsertSQL, id); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		reportEventsPerSecond(b, benchEvents)
	})
}

// BenchmarkProcessPartitions measures total throughput of a no-op
// projection split into hash partitions whose processors run concurrently,
// reading through the partition filter (read=filter) and, for 2 or more
// partitions, through the partition index for their count (read=index,
// see CreatePartitionIndex). It also reports the rows the partitions
// fetched per iteration, which must add up to the log: each partition
// fetches only its own rows either way.
//
//	go test ./pkg/projection -run '^$' -bench ProcessPartitions -benchtime 5x -count 3
func BenchmarkProcessPartitions(b *testing.B) {
	pool := newBenchLog(b)
	store := projection.NewStore()
	ctx := context.Background()
	for _, partitions := range []int{1, 4, 16, 64} {
		reads := []string{"filter"}
		if partitions >= projection.MinPartitionIndexPartitions {
			reads = append(reads, "index")
		}
		for _, read := range reads {
			if read == "index" {
				if _, err := projection.CreatePartitionIndex(ctx, pool, partitions); err != nil {
					b.Fatal(err)
				}
			}
			b.Run(fmt.Sprintf("partitions=%d/read=%s", partitions, read), func(b *testing.B) {
				b.ReportAllocs()
				procs := make([]*projection.Processor, partitions)
				for k := range procs {
					procs[k] = projection.NewProcessor(pool, store, benchConfig(1000, k, partitions))
				}
				for b.Loop() {
					b.StopTimer()
					resetProjection(b, pool)
					projs := make([]*countingProjection, partitions)
					for k := range projs {
						projs[k] = &countingProjection{}
					}
					errs := make([]error, partitions)
					var wg sync.WaitGroup
					b.StartTimer()
					for k := range procs {
						wg.Go(func() { errs[k] = procs[k].CatchUp(ctx, projs[k]) })
					}
					wg.Wait()
					b.StopTimer()
					var total int64
					for k, err := range errs {
						if err != nil {
							b.Fatalf("partition %d: %v", k, err)
						}
						total += projs[k].handled.Load()
					}
					if total != benchEvents {
						b.Fatalf("partitions handled %d events in all, want %d", total, benchEvents)
					}
					b.StartTimer()
				}
				reportEventsPerSecond(b, benchEvents)
				var fetched int64
				for _, p := range procs {
					fetched += p.Stats().EventsFetched
				}
				b.ReportMetric(float64(fetched)/float64(b.N), "rows/op")
			})
			if read == "index" {
				if err := projection.DropPartitionIndex(ctx, pool, partitions); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// BenchmarkAppend measures appends from one goroutine, each in its own
// transaction, to random aggregates, with 1 or 10 events per call, and
// plain SQL INSERTs of one event each, the way writers in other languages
// append.
func BenchmarkAppend(b *testing.B) {
	const eventsPerOp = 1000
	pool := newPool(b)
	store := projection.NewStore()
	ids, _ := benchAggregateIDs()
	payload := json.RawMessage(`{"order_id":"order-000042","sku":"SKU-01234","quantity":3,"unit_price_cents":1299}`)
	for _, c := range []struct{ perCall, indexes int }{{1, 0}, {10, 0}, {10, 1}} {
		perCall := c.perCall
		name := fmt.Sprintf("events=%d", perCall)
		if c.indexes > 0 {
			// What a partition index costs each append: one more
			// index entry per event.
			name += fmt.Sprintf("/partitionIndexes=%d", c.indexes)
			if _, err := projection.CreatePartitionIndex(context.Background(), pool, 64); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(1, uint64(perCall)))
			events := make([]projection.Event, perCall)
			for i := range events {
				events[i] = projection.Event{EventType: "OrderLineAdded", Payload: payload}
			}
			for b.Loop() {
				for range eventsPerOp / perCall {
					id := ids[rng.IntN(len(ids))]
					if _, err := store.Append(ctx, pool, "Order", id, projection.AnyVersion, events...); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportEventsPerSecond(b, eventsPerOp)
		})
		if c.indexes > 0 {
			if err := projection.DropPartitionIndex(context.Background(), pool, 64); err != nil {
				b.Fatal(err)
			}
		}
	}
	// A writer in another language: one plain INSERT per event, each its
	// own transaction, with the partition hash left to the trigger or
	// given as Append gives it. It tracks versions itself, as the only
	// writer of its aggregates (a type of each run's own).
	for _, mode := range []string{"trigger", "given"} {
		b.Run("plain-sql-insert/hash="+mode, func(b *testing.B) {
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(2, 0))
			aggType := "SQLOrder-" + uuid.NewString()
			versions := make(map[string]int64, len(ids))
			for b.Loop() {
				for range eventsPerOp {
					id := ids[rng.IntN(len(ids))]
					versions[id]++
					var err error
					if mode == "trigger" {
						_, err = pool.Exec(ctx, plainInsertSQL, aggType, id, versions[id], uuid.New(), "OrderLineAdded", payload)
					} else {
						_, err = pool.Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload, partition_hash)
							VALUES ($1, $2, $3, $4, $5, $6, $7)`, aggType, id, versions[id], uuid.New(), "OrderLineAdded", payload, int64(projection.PartitionHash(id)))
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			reportEventsPerSecond(b, eventsPerOp)
		})
	}
}

// BenchmarkRescaleSwitch measures how long a running projection takes to
// move to a new partition count: from SetTopology until every partition of
// the new generation has completed a batch under it. Five processors
// follow the topology (the operator's mode) at batch 100 with the default
// 100ms poll interval, while the count alternates between 4 and 5 (key 4
// idles at 4), with no process restarted.
func BenchmarkRescaleSwitch(b *testing.B) {
	pool := newBenchLog(b)
	store := projection.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resetProjection(b, pool)
	if _, err := projection.SetTopology(ctx, pool, "bench_noop", 4); err != nil {
		b.Fatal(err)
	}
	const keys = 5
	procs := make([]*projection.Processor, keys)
	done := make(chan error, keys)
	for k := range procs {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.Topology = k, projection.TopologyFollow
		procs[k] = projection.NewProcessor(pool, store, cfg)
		go func() { done <- procs[k].Run(ctx, &countingProjection{}) }()
	}
	caughtUp := func(gen int64, n int) bool {
		for k := range n {
			if st := procs[k].Stats(); st.Generation != gen || st.Idle {
				return false
			}
		}
		return true
	}
	n := 4
	for b.Loop() {
		n = 9 - n // 4 <-> 5
		before := make([]int64, keys)
		for k, p := range procs {
			before[k] = p.Stats().Batches
		}
		topo, err := projection.SetTopology(ctx, pool, "bench_noop", n)
		if err != nil {
			b.Fatal(err)
		}
		for !caughtUp(topo.Generation, n) || !batchedSince(procs[:n], before) {
			time.Sleep(time.Millisecond) // a benchmark measures wall time: polls at 1ms
		}
	}
	cancel()
	for range procs {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// batchedSince reports whether every processor completed a batch since its
// Batches count was before[k].
func batchedSince(procs []*projection.Processor, before []int64) bool {
	for k, p := range procs {
		if p.Stats().Batches <= before[k] {
			return false
		}
	}
	return true
}

// Wakeup benchmarks: how long an appended event waits to be handled, and
// what idle partitions cost, with and without wakeups on commit.

// latencyProjection notes when each event's batch committed: Handle
// collects the batch's aggregate ids, OnBatch (after the commit) stamps
// them. Both run on the processor's goroutine.
type latencyProjection struct {
	pending []string
	mu      sync.Mutex
	handled map[string]time.Time
}

func (*latencyProjection) Name() string { return "bench_latency" }

func (p *latencyProjection) Handle(_ context.Context, _ pgx.Tx, e *projection.PersistedEvent) error {
	p.pending = append(p.pending, e.AggregateID)
	return nil
}

func (p *latencyProjection) committed(projection.BatchResult) {
	now := time.Now()
	p.mu.Lock()
	for _, id := range p.pending {
		if _, ok := p.handled[id]; !ok {
			p.handled[id] = now
		}
	}
	p.mu.Unlock()
	p.pending = p.pending[:0]
}

func (p *latencyProjection) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.handled)
}

// BenchmarkWakeupLatency measures append-to-handled latency at 1,000
// events/s (4 appending goroutines, each event its own aggregate and
// transaction), with pollInterval 1s, with wakeups on commit (the
// database's projectionist.wakeups on) and with polling only (the
// default: the setting unset, the trigger sends nothing). Latency runs from just before Store.Append is called to
// the commit of the batch that handled the event, so it includes the
// append's own round trips. Each iteration appends 300 events on one
// schedule over all iterations; p50, p99 and max are over every event.
func BenchmarkWakeupLatency(b *testing.B) {
	const (
		rate        = 1000 // events/s
		eventsPerOp = 300
		appenders   = 4
	)
	for _, mode := range []projection.WakeupMode{projection.WakeupsListen, projection.WakeupsPoll} {
		b.Run("wakeups="+mode.String(), func(b *testing.B) {
			pool := newPool(b)
			if mode == projection.WakeupsListen {
				enableWakeups(b, pool) // the opt-in's other end
			}
			store := projection.NewStore()
			proj := &latencyProjection{handled: map[string]time.Time{}}
			cfg := projection.DefaultProcessorConfig()
			cfg.PollInterval, cfg.Wakeups, cfg.OnBatch = time.Second, mode, proj.committed
			proc := projection.NewProcessor(pool, store, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- proc.Run(ctx, proj) }()
			for proc.Stats().Batches == 0 {
				time.Sleep(time.Millisecond) // a benchmark measures wall time: polls at 1ms
			}
			var startedMu sync.Mutex
			started, returned := map[string]time.Time{}, map[string]time.Time{}
			// One schedule over all iterations, so that appends keep
			// their rate and phase across iterations and no iteration
			// starts in step with a poll.
			var begin time.Time
			var next atomic.Int64
			total := 0
			for b.Loop() {
				if begin.IsZero() {
					begin = time.Now()
				}
				total += eventsPerOp
				var wg sync.WaitGroup
				for range appenders {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= int64(total) {
								next.Add(-1)
								return
							}
							time.Sleep(time.Until(begin.Add(time.Duration(i) * time.Second / rate))) // paces appends at rate
							id := fmt.Sprintf("lat-%d", i)
							startedMu.Lock()
							started[id] = time.Now()
							startedMu.Unlock()
							if _, err := store.Append(ctx, pool, "Order", id, projection.NoStream, projection.Event{EventType: "Placed"}); err != nil {
								b.Error(err)
								return
							}
							startedMu.Lock()
							returned[id] = time.Now()
							startedMu.Unlock()
						}
					})
				}
				wg.Wait()
			}
			for proj.count() < total {
				time.Sleep(time.Millisecond) // a benchmark measures wall time: polls at 1ms
			}
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			// lat: from calling Append to the handling batch's commit;
			// appendLat: Append's own time, its share of lat.
			// afterLat: from Append's return (the commit) to the
			// handling commit, 0 if the event was handled first.
			lat, appendLat, afterLat := make([]time.Duration, 0, total), make([]time.Duration, 0, total), make([]time.Duration, 0, total)
			proj.mu.Lock()
			for id, at := range proj.handled {
				lat = append(lat, at.Sub(started[id]))
				appendLat = append(appendLat, returned[id].Sub(started[id]))
				afterLat = append(afterLat, max(0, at.Sub(returned[id])))
			}
			proj.mu.Unlock()
			slices.Sort(lat)
			slices.Sort(appendLat)
			slices.Sort(afterLat)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(ms(appendLat[len(appendLat)*99/100]), "append-p99-ms")
			b.ReportMetric(ms(afterLat[len(afterLat)*99/100]), "commit-to-handled-p99-ms")
			b.ReportMetric(float64(proc.Stats().Wakeups)/float64(b.N), "wakeups/op")
		})
	}
}

// roundTrips counts the statements and batches a pool's connections send,
// and the liveness pings pgxpool sends on acquiring a connection idle for
// over a second (its default rule, kept).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (*roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (*roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (*roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (r *roundTrips) shouldPing(_ context.Context, p pgxpool.ShouldPingParams) bool {
	if p.IdleDuration > time.Second {
		r.n.Add(1)
		return true
	}
	return false
}

// BenchmarkIdlePartitionQueries measures the round trips per second that
// 100 caught-up partitions of one projection, run by one runner in one
// process, send to an idle database: polling every 100ms, and with
// wakeups (one listening connection). With wakeups the partitions poll
// every WakeupPollInterval, set to 2s here (a fifth of the default, to
// keep the benchmark short): each iteration is a window of that length,
// so it holds one safety poll of every partition whatever their phase.
// The default 10s sends about a fifth of the figure reported. Before the
// windows, a warm-up in which every partition handled its events and made
// its first idle checkpoint save.
func BenchmarkIdlePartitionQueries(b *testing.B) {
	const (
		partitions = 100
		window     = 2 * time.Second
	)
	for _, mode := range []projection.WakeupMode{projection.WakeupsListen, projection.WakeupsPoll} {
		b.Run("wakeups="+mode.String(), func(b *testing.B) {
			trips := &roundTrips{}
			poolCfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			poolCfg.ConnConfig.Tracer, poolCfg.ShouldPing, poolCfg.MaxConns = trips, trips.shouldPing, 8
			pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			if _, err := projection.Migrate(context.Background(), pool); err != nil {
				b.Fatal(err)
			}
			if mode == projection.WakeupsListen {
				enableWakeups(b, pool)
			}
			// A short log, all handled in the warm-up.
			store := projection.NewStore()
			for i := range 200 {
				if _, err := store.Append(context.Background(), pool, "Order", fmt.Sprintf("idle-%d", i), projection.NoStream, projection.Event{EventType: "Placed"}); err != nil {
					b.Fatal(err)
				}
			}
			cfg := projection.DefaultProcessorConfig()
			cfg.Wakeups, cfg.WakeupPollInterval = mode, window
			proj := &countingProjection{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- runner.RunProjectionPartitionsWithConfig(ctx, pool, store, proj, partitions, cfg) }()
			for proj.handled.Load() < 200 {
				time.Sleep(10 * time.Millisecond) // polls
			}
			time.Sleep(2 * time.Second) // the first idle checkpoint saves, on the wall clock this benchmark measures
			var sent int64
			for b.Loop() {
				before := trips.n.Load()
				time.Sleep(window) // counts the round trips of a window of wall time
				sent += trips.n.Load() - before
			}
			b.ReportMetric(float64(sent)/(window.Seconds()*float64(b.N)), "queries/s")
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkGetPartitionLag measures one partition's lag over the fixture
// log, as the worker's metrics sampler does once per partition every
// METRICS_INTERVAL: with one partition 100 000 events behind, with 4
// partitions (25 000 each), and scoped to an aggregate type the log does
// not hold (the scan still walks every entry after the position).
func BenchmarkGetPartitionLag(b *testing.B) {
	ctx := context.Background()
	pool := newBenchLog(b)
	for _, bc := range []struct {
		name       string
		partitions int
		types      []string
	}{
		{"1-partition", 1, nil},
		{"4-partitions", 4, nil},
		{"1-partition-scoped-out", 1, []string{"Invoice"}},
	} {
		proj := "bench_lag_" + strconv.Itoa(bc.partitions)
		if _, err := projection.SetTopology(ctx, pool, proj, bc.partitions); err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			var events int64
			for b.Loop() {
				l, err := projection.GetPartitionLag(ctx, pool, projection.LagQuery{Projection: proj, AggregateTypes: bc.types})
				if err != nil {
					b.Fatal(err)
				}
				events = l.Events
			}
			b.ReportMetric(float64(events), "lag-events")
		})
	}
}
