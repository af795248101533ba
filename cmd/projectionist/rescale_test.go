package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// testSeed returns the seed of a randomized test: PROJECTIONIST_TEST_SEED
// if set (to replay a failure), else a new one. It is logged either way.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PROJECTIONIST_TEST_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("PROJECTIONIST_TEST_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (replay with PROJECTIONIST_TEST_SEED=%d)", seed, seed)
	return seed
}

// Workers of the real binary in following mode (no TOTAL_PARTITIONS, as
// under the operator), partition keys 0..7, run activity_log and revenue
// while `events generate` appends continuously. The test switches the
// partition count as the operator would (projection.SetTopology) through
// 1 -> 4 -> 8 -> 3 -> 5 -> 1 and then a few random counts, and between the
// switches SIGKILLs workers at random, one or several at once, sometimes
// during a switch, and starts them again, with random batch sizes; one
// order is appended in a transaction held open across two switches. At
// the end every event is in
// activity_log exactly once, each aggregate's events were applied in
// version order, and revenue's total is the sum of the log's orders.
func TestRandomizedRescale(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 0x7072))
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	migrate(t, dsn)
	pool := pgtest.OpenPool(t, dsn)
	names := []string{"activity_log", "revenue"}
	setTopology(t, pool, 1, names...)

	gen := startProcess(t, "events generate", map[string]string{"DATABASE_URL": dsn},
		"events", "generate", "--count", "12000", "--rate", "2000", "--aggregates", "300", "--concurrency", "4", "--progress", "0")

	const keys = 8
	workers := make([]*process, keys)
	starts := 0
	startKey := func(k int, batch string) {
		starts++
		if batch == "" {
			batch = []string{"1", "10", "50", "200"}[rng.IntN(4)]
		}
		workers[k] = startWorker(t, fmt.Sprintf("worker %d (start %d, batch %s)", k, starts, batch), dsn,
			map[string]string{"PARTITION_KEY": strconv.Itoa(k), "BATCH_SIZE": batch, "POLL_INTERVAL": "20ms"},
			"--projection", strings.Join(names, ","))
	}
	for k := range keys {
		startKey(k, "")
	}
	alive := func() (up, down []int) {
		for k, w := range workers {
			if w.running() {
				up = append(up, k)
			} else {
				down = append(down, k)
			}
		}
		return up, down
	}
	var killed []*process // exited because the test killed them
	kill := func(k int) {
		workers[k].kill(t)
		killed = append(killed, workers[k])
	}
	// checkAlive fails the test if a worker the test did not kill has
	// exited: a duplicate apply makes activity_log's INSERT fail, which
	// stops the worker (ERROR_POLICY=stop).
	checkAlive := func() {
		for _, w := range workers {
			if w.running() {
				continue
			}
			if !containsProcess(killed, w) {
				t.Fatalf("%s exited on its own (%s):\n%s", w.name, w.state, tail(w.out.String(), 25))
			}
		}
	}

	steps := []int{4, 8, 3, 5, 1}
	for range 4 {
		steps = append(steps, 1+rng.IntN(keys))
	}
	// At one step, the test appends an order in a transaction that it
	// keeps open across the next two switches: every reader is held below
	// its transaction id meanwhile, and the event, committed late with an
	// old transaction id, must be applied once by a later generation.
	holdAt := rng.IntN(len(steps) - 2)
	var held pgx.Tx
	heldEvents := 0
	kills, switches := 0, 0
	current := 1
	for i, n := range steps {
		if i == holdAt {
			var err error
			if held, err = pool.Begin(ctx); err != nil {
				t.Fatal(err)
			}
			defer held.Rollback(ctx) //nolint:errcheck // a no-op once committed
			payload, _ := json.Marshal(demo.OrderPlaced{CustomerID: "user-held", AmountCents: 123_456})
			if _, err := projection.NewStore().Append(ctx, held, demo.AggregateOrder, "order-held", projection.NoStream,
				projection.Event{EventType: demo.EventOrderPlaced, Payload: payload}); err != nil {
				t.Fatal(err)
			}
		}
		if i == holdAt+2 {
			if err := held.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			heldEvents++
			t.Logf("committed the order held open across two switches")
		}
		// Chaos between switches: 2 to 4 rounds of sleeping 30..250ms,
		// then killing one worker, killing up to three at once, starting
		// one again, or starting all again.
		for range 2 + rng.IntN(3) {
			time.Sleep(time.Duration(30+rng.IntN(220)) * time.Millisecond) // chaos: a random moment is the point
			checkAlive()
			up, down := alive()
			switch r := rng.Float64(); {
			case r < 0.4 && len(up) > 0:
				kill(up[rng.IntN(len(up))])
				kills++
			case r < 0.55 && len(up) > 0:
				rng.Shuffle(len(up), func(i, j int) { up[i], up[j] = up[j], up[i] })
				for _, k := range up[:min(len(up), 1+rng.IntN(3))] {
					kill(k)
					kills++
				}
			case r < 0.85 && len(down) > 0:
				startKey(down[rng.IntN(len(down))], "")
			default:
				for _, k := range down {
					startKey(k, "")
				}
			}
		}
		// The test is about events applied across switches: before each
		// switch the generation in place applies an event, unless the held
		// transaction holds every reader back or the generator is done (on
		// a loaded machine the chaos rounds alone may not give the workers
		// the time to, and the check on generations below failed).
		if i < holdAt || i >= holdAt+2 {
			waitForGenerationToApply(t, pool, gen, current, workers, startKey)
		}
		// Switch both projections, in a random order, sometimes killing
		// a worker while the switch waits for batches in flight.
		order := slices.Clone(names)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		switched := make(chan error, 1)
		began := time.Now()
		go func() {
			for _, name := range order {
				if _, err := projection.SetTopology(ctx, pool, name, n); err != nil {
					switched <- err
					return
				}
			}
			switched <- nil
		}()
		if up, _ := alive(); rng.IntN(10) < 3 && len(up) > 0 {
			kill(up[rng.IntN(len(up))])
			kills++
		}
		if err := <-switched; err != nil {
			t.Fatal(err)
		}
		took := time.Since(began)
		if n != current {
			switches++
			current = n
		}
		t.Logf("partitions -> %d in %s (%d workers running)", n, took.Round(time.Millisecond), func() int { up, _ := alive(); return len(up) }())
	}

	// Every worker is killed a last time and every key runs again, with
	// batches of 100 so that catching up does not take long on a loaded
	// machine; the generator finishes; the workers catch up.
	up, _ := alive()
	for _, k := range up {
		kill(k)
		kills++
	}
	for k := range keys {
		startKey(k, "100")
	}
	if code := gen.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("events generate exited with %d:\n%s", code, gen.out.String())
	}
	appended := gen.appended(t) + heldEvents
	checkAlive()
	events := waitCaughtUp(t, pool, 2*time.Minute, names, workers...)
	if events != int64(appended) {
		t.Errorf("the log holds %d events, events generate appended %d", events, appended)
	}

	// The keys inside the final topology are ready; the others are idle,
	// not ready.
	for k, w := range workers {
		addr := w.httpAddr(t)
		waitFor(t, 30*time.Second, w.name+" readiness", func() (bool, error) {
			code, body, err := readyz(addr)
			if k < current {
				return code == 200, fmt.Errorf("%d %s (%w)", code, body, err)
			}
			return code == 503 && strings.Contains(body, "idle"), fmt.Errorf("%d %s (%v)", code, body, err)
		})
	}
	for _, w := range workers {
		w.signal(t, syscall.SIGTERM)
	}
	for _, w := range workers {
		if code := w.wait(t, 30*time.Second); code != 0 {
			t.Errorf("%s exited with %d after SIGTERM, want 0:\n%s", w.name, code, tail(w.out.String(), 25))
		}
	}

	verifyActivityLog(t, pool)
	verifyRevenue(t, pool)
	for _, name := range names {
		if top := topology(t, pool, name); top.Generation != int64(1+switches) || top.TotalPartitions != current {
			t.Errorf("%s: topology %+v, want generation %d with %d partitions", name, top, 1+switches, current)
		}
	}
	generations := scalar(t, pool, "SELECT count(DISTINCT generation) FROM activity_log")
	t.Logf("steps %v: %d switches, %d workers SIGKILLed, %d started; %d events applied by %d generations",
		steps, switches, kills, starts, events, generations)
	// The test is only worth something if events were applied across
	// switches: most generations applied some.
	if generations < int64(switches+1)/2 {
		t.Errorf("only %d of %d generations applied events", generations, switches+1)
	}
}

// waitForGenerationToApply waits until activity_log's current generation,
// of current partitions, has applied an event or the generator has exited,
// starting the workers of that topology that are down if none of them runs.
func waitForGenerationToApply(t *testing.T, pool *pgxpool.Pool, gen *process, current int, workers []*process,
	startKey func(k int, batch string)) {
	t.Helper()
	generation := topology(t, pool, "activity_log").Generation
	if !slices.ContainsFunc(workers[:current], (*process).running) {
		for k := range current {
			startKey(k, "")
		}
	}
	waitFor(t, time.Minute, fmt.Sprintf("generation %d to apply an event", generation), func() (bool, error) {
		if !gen.running() {
			return true, nil
		}
		n := scalar(t, pool, "SELECT count(*) FROM (SELECT FROM activity_log WHERE generation = $1 LIMIT 1) AS one", generation)
		return n > 0, fmt.Errorf("generation %d has applied no event", generation)
	})
}

func containsProcess(ps []*process, p *process) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// The guide's separate-processes pattern with the real binary: four
// processes with PARTITION_KEY=0..3 TOTAL_PARTITIONS=4 (standalone: they
// switch the topology themselves) run every demo projection while events
// are appended; they are stopped with SIGTERM mid-stream and started again
// as two, PARTITION_KEY=0..1 TOTAL_PARTITIONS=2, and more events follow.
// Every event is applied exactly once, revenue is exact, and user_stats
// matches the log.
func TestSeparateProcessesRescale(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	migrate(t, dsn)
	pool := pgtest.OpenPool(t, dsn)
	generate(t, dsn, "--count", "1500", "--aggregates", "200", "--concurrency", "4")

	startAll := func(n int) []*process {
		var ps []*process
		for k := range n {
			ps = append(ps, startWorker(t, fmt.Sprintf("worker %d of %d", k, n), dsn,
				map[string]string{"PARTITION_KEY": strconv.Itoa(k), "TOTAL_PARTITIONS": strconv.Itoa(n), "BATCH_SIZE": "20"}))
		}
		return ps
	}
	four := startAll(4)
	gen := startProcess(t, "events generate", map[string]string{"DATABASE_URL": dsn},
		"events", "generate", "--count", "4000", "--rate", "2000", "--aggregates", "200", "--concurrency", "4", "--progress", "0")
	// Stop the four once each has applied events, while the generator
	// still appends and the partitions' checkpoints differ.
	waitFor(t, time.Minute, "each of the 4 partitions to apply events", func() (bool, error) {
		if err := mustRunning(four...); err != nil {
			t.Fatal(err)
		}
		n, err := query(pool, "SELECT count(DISTINCT partition_key) FROM activity_log WHERE total_partitions = 4")
		return n == 4, err
	})
	for _, w := range four {
		w.signal(t, syscall.SIGTERM)
	}
	for _, w := range four {
		if code := w.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("%s exited with %d after SIGTERM, want 0:\n%s", w.name, code, tail(w.out.String(), 25))
		}
	}
	if gen.running() {
		t.Logf("the four stopped with %d events applied, the generator still running", scalar(t, pool, "SELECT count(*) FROM activity_log"))
	}

	two := startAll(2)
	if code := gen.wait(t, time.Minute); code != 0 {
		t.Fatalf("events generate exited with %d:\n%s", code, gen.out.String())
	}
	generate(t, dsn, "--count", "1000", "--aggregates", "250", "--concurrency", "4")
	all := []string{"activity_log", "revenue", "user_count"}
	waitCaughtUp(t, pool, time.Minute, all, two...)
	for _, w := range two {
		w.stop(t, 30*time.Second)
	}

	verifyActivityLog(t, pool)
	verifyRevenue(t, pool)
	verifyUserStats(t, pool)
	for _, name := range all {
		if top := topology(t, pool, name); top.Generation != 2 || top.TotalPartitions != 2 {
			t.Errorf("%s: topology %+v, want generation 2 with 2 partitions", name, top)
		}
	}
	if n := scalar(t, pool, "SELECT count(DISTINCT partition_key) FROM activity_log WHERE total_partitions = 2 AND generation = 2"); n != 2 {
		t.Errorf("%d partitions of the second generation applied events, want 2", n)
	}
}
