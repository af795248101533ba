package projection_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// Crash-safety test (DESIGN.md rule 1): a processor whose projection is
// deliberately NOT idempotent is SIGKILLed over and over; the read model must
// still end up with every event applied exactly once.

const (
	// crashHelperEnvDSN gates TestCrashHelperProcess: when set, it is the DSN
	// of the database the helper processes.
	crashHelperEnvDSN = "PROJECTIONIST_CRASH_HELPER_DSN"
	// crashHelperEnvBatch, set to "1", makes the helper run the counter
	// as a BatchProjection.
	crashHelperEnvBatch = "PROJECTIONIST_CRASH_HELPER_BATCH"
	// crashHelperAppName tags the helper's connections, so the parent can
	// wait until a killed helper's server sessions are gone.
	crashHelperAppName = "projectionist-crash-helper"
	crashProjection    = "crash-counter"
	crashBatchSize     = 20
)

// counterProjection adds one to counters.n per event: applying an event
// twice, or skipping one, shows up in n.
type counterProjection struct{}

func (counterProjection) Name() string { return crashProjection }

func (counterProjection) Handle(ctx context.Context, tx pgx.Tx, _ *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, "UPDATE counters SET n = n + 1 WHERE id = 1")
	return err
}

// batchCounterProjection is counterProjection as a BatchProjection: one
// UPDATE per batch, adding the batch's length.
type batchCounterProjection struct{ counterProjection }

func (batchCounterProjection) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, "UPDATE counters SET n = n + $1 WHERE id = 1", len(events))
	return err
}

// crashCounter returns the counter projection, as a BatchProjection if
// batch.
func crashCounter(batch bool) projection.Projection {
	if batch {
		return batchCounterProjection{}
	}
	return counterProjection{}
}

// TestCrashHelperProcess is not a test. It is the child process that
// TestCrashSafety starts (by re-executing this test binary with
// -test.run=^TestCrashHelperProcess$) and SIGKILLs. Without the
// PROJECTIONIST_CRASH_HELPER_DSN environment variable it returns at once and
// checks nothing; with it, it runs the counter projection's processor until
// killed.
func TestCrashHelperProcess(t *testing.T) {
	dsn := os.Getenv(crashHelperEnvDSN)
	if dsn == "" {
		return // not started by TestCrashSafety: nothing to do
	}
	// Bounded, so that an orphaned helper cannot run forever.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("crash helper: parsing DSN: %v", err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = crashHelperAppName
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("crash helper: opening pool: %v", err)
	}
	defer pool.Close()
	pc := projection.DefaultProcessorConfig()
	pc.BatchSize = crashBatchSize
	pc.PollInterval = 2 * time.Millisecond
	if err := projection.NewProcessor(pool, projection.NewStore(), pc).Run(ctx, crashCounter(os.Getenv(crashHelperEnvBatch) == "1")); err != nil {
		t.Fatalf("crash helper: Run: %v", err)
	}
}

// crashState is what the database says after a helper died.
type crashState struct {
	n               int64 // counters.n
	processed       int64 // checkpoint's events_processed (0 if no row yet)
	events          int64 // count(*) FROM events
	belowCheckpoint int64 // events at or before the checkpoint position
}

func readCrashState(ctx context.Context, t *testing.T, pool *pgxpool.Pool) crashState {
	t.Helper()
	var s crashState
	err := pool.QueryRow(ctx, `
		SELECT (SELECT n FROM counters WHERE id = 1),
		       coalesce((SELECT events_processed FROM projection_checkpoints
		                 WHERE projection_name = $1 AND partition_key = 0), 0),
		       (SELECT count(*) FROM events),
		       (SELECT count(*) FROM events e, projection_checkpoints c
		        WHERE c.projection_name = $1 AND c.partition_key = 0
		          AND (e.transaction_id, e.global_position) <= (c.last_transaction_id, c.last_global_position))`,
		crashProjection).Scan(&s.n, &s.processed, &s.events, &s.belowCheckpoint)
	if err != nil {
		t.Fatalf("reading state: %v", err)
	}
	return s
}

// waitHelperSessionsGone waits until no server session of a helper is left,
// so that a killed helper's open batch has been rolled back (or committed)
// and the database state is final.
func waitHelperSessionsGone(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for {
		var left int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, crashHelperAppName).Scan(&left); err != nil {
			t.Fatalf("counting helper sessions: %v", err)
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d helper session(s) still open: %v", left, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// appendSpread appends total events over aggregates agg-0..agg-(aggregates-1),
// perCall events per Append call.
func appendSpread(ctx context.Context, t *testing.T, pool *pgxpool.Pool, store *projection.Store, rng *rand.Rand, total, perCall, aggregates int) {
	t.Helper()
	for total > 0 {
		n := min(perCall, total)
		evs := make([]projection.Event, n)
		for i := range evs {
			evs[i] = projection.Event{EventType: "Incremented", Payload: []byte(`{"by":1}`)}
		}
		id := fmt.Sprintf("agg-%d", rng.IntN(aggregates))
		if _, err := store.Append(ctx, pool, "Counter", id, projection.AnyVersion, evs...); err != nil {
			t.Fatalf("appending to %s: %v", id, err)
		}
		total -= n
	}
}

func TestCrashSafety(t *testing.T) {
	t.Run("handler=event", func(t *testing.T) { testCrashSafety(t, false, 30) })
	// Fewer kills: the batch handler's runs are the same machinery with
	// one statement per batch, which is what the kills must hit.
	t.Run("handler=batch", func(t *testing.T) { testCrashSafety(t, true, 15) })
}

func testCrashSafety(t *testing.T, batch bool, kills int) {
	const (
		initialEvents = 20000
		aggregates    = 200
		// After each kill the parent appends at least minAppend events,
		// and enough to leave minBacklog unprocessed, so that every run
		// has work for longer than it lives.
		minAppend  = 100
		minBacklog = 5000
	)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pool, store := newStore(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))

	if _, err := pool.Exec(ctx, `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
		INSERT INTO counters VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}
	// 100 events per Append call: 200 transactions whose events the
	// 20-event batches split in the middle of a transaction.
	for a := range aggregates {
		evs := make([]projection.Event, initialEvents/aggregates)
		for i := range evs {
			evs[i] = projection.Event{EventType: "Incremented", Payload: []byte(`{"by":1}`)}
		}
		if _, err := store.Append(ctx, pool, "Counter", fmt.Sprintf("agg-%d", a), projection.AnyVersion, evs...); err != nil {
			t.Fatal(err)
		}
	}

	dsn := pool.Config().ConnString()
	start := func() (*exec.Cmd, *bytes.Buffer, chan error) {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashHelperEnvDSN+"="+dsn)
		if batch {
			cmd.Env = append(cmd.Env, crashHelperEnvBatch+"=1")
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		// Should this test die, the helper dies with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting helper: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return cmd, &out, done
	}

	var (
		appended    = initialEvents
		midRun      int // kills that found work left and progress since the previous kill
		beforeFirst int // kills that landed before the run committed any batch
		prev        = readCrashState(ctx, t, pool)
	)
	for k := range kills {
		cmd, out, done := start()
		if k%4 == 3 {
			// Kill early: during start-up or the first batches.
			time.Sleep(time.Duration(1+rng.IntN(40)) * time.Millisecond) // chaos: a random moment is the point
		} else {
			// Wait for this run to commit a batch, then kill at a random
			// moment while it is working.
			for {
				if s := readCrashState(ctx, t, pool); s.processed > prev.processed {
					break
				}
				select {
				case err := <-done:
					t.Fatalf("kill %d: helper exited by itself (%v) before making progress:\n%s", k, err, out)
				case <-ctx.Done():
					t.Fatalf("kill %d: helper made no progress: %v\n%s", k, ctx.Err(), out)
				case <-time.After(time.Millisecond):
				}
			}
			time.Sleep(time.Duration(20+rng.IntN(130)) * time.Millisecond) // chaos: a random moment is the point
		}
		select {
		case err := <-done:
			t.Fatalf("kill %d: helper exited by itself (%v):\n%s", k, err, out)
		default:
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", k, err)
		}
		err := <-done
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: helper did not die of SIGKILL: %v\n%s", k, err, out)
		}
		waitHelperSessionsGone(ctx, t, pool)

		s := readCrashState(ctx, t, pool)
		// The read model and the checkpoint commit together: after any
		// crash they agree, and the checkpoint covers exactly the events
		// counted.
		if s.n != s.processed || s.n != s.belowCheckpoint || s.n > s.events {
			t.Fatalf("after kill %d: counters.n = %d, checkpoint events_processed = %d, events at or before the checkpoint = %d, events = %d",
				k, s.n, s.processed, s.belowCheckpoint, s.events)
		}
		if s.n < prev.n {
			t.Fatalf("after kill %d: counters.n went back from %d to %d", k, prev.n, s.n)
		}
		if s.n > prev.n && s.n < s.events {
			midRun++
		}
		if s.n == prev.n {
			beforeFirst++
		}
		prev = s

		// More events while the processor is down: the next run always
		// has work, and later appends mix with the backlog.
		more := max(minAppend, minBacklog-int(s.events-s.n))
		appendSpread(ctx, t, pool, store, rng, more, 1+rng.IntN(100), aggregates)
		appended += more
	}
	t.Logf("%d kills: %d mid-run with progress, %d before the run's first commit; counter at %d of %d events after the last kill",
		kills, midRun, beforeFirst, prev.n, prev.events)
	if midRun < kills/2 {
		t.Fatalf("only %d of %d kills landed mid-run after progress; the test did not exercise crashes", midRun, kills)
	}

	// Finish in process: one CatchUp takes the projection to the end of
	// the log (no helper session is left to hold the horizon back).
	pc := projection.DefaultProcessorConfig()
	pc.BatchSize = crashBatchSize
	if err := projection.NewProcessor(pool, store, pc).CatchUp(ctx, crashCounter(batch)); err != nil {
		t.Fatalf("final CatchUp: %v", err)
	}
	s := readCrashState(ctx, t, pool)
	if s.events != int64(appended) {
		t.Fatalf("events table holds %d events, want the %d appended", s.events, appended)
	}
	if prev.n <= 0 || prev.n >= prev.events {
		t.Fatalf("counter after the last kill is %d of %d events: the kills did not land mid-run", prev.n, prev.events)
	}
	if s.n != s.events {
		t.Fatalf("counters.n = %d, want %d (one per event): events were skipped or applied twice", s.n, s.events)
	}
	if s.processed != s.events {
		t.Fatalf("checkpoint events_processed = %d, want %d", s.processed, s.events)
	}
}
