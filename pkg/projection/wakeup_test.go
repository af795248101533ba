package projection_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// enableWakeups sets projectionist.wakeups = on for pool's database, as a
// DBA opts in, and closes pool's connections, which do not see a database
// setting made after they opened.
func enableWakeups(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	if _, err := pool.Exec(context.Background(), `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET projectionist.wakeups = on', current_database());
	END $$`); err != nil {
		tb.Fatal(err)
	}
	pool.Reset()
}

// wakeupConfig listens and polls only every hour, so that an event
// appended while a processor waits is handled within eventually's 30s
// only if a notification wakes it.
func wakeupConfig(l *projection.Listener, key, total int) projection.ProcessorConfig {
	cfg := projection.DefaultProcessorConfig()
	cfg.Wakeups, cfg.PollInterval, cfg.WakeupPollInterval = projection.WakeupsListen, time.Hour, time.Hour
	cfg.Listener, cfg.PartitionKey, cfg.TotalPartitions, cfg.Topology = l, key, total, projection.TopologyFollow
	return cfg
}

// startProcessors runs one processor per partition under ctx with a
// shared listener, once the topology exists (so that creating it notifies
// no one), and waits until the listener listens and every processor has
// completed its first batch. It returns the processors and a function
// that stops them and reports their errors.
func startProcessors(t *testing.T, pool *pgxpool.Pool, l *projection.Listener, proj func(key int) projection.Projection, total int) ([]*projection.Processor, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := projection.SetTopology(ctx, pool, proj(0).Name(), total); err != nil {
		t.Fatal(err)
	}
	procs := make([]*projection.Processor, total)
	errs := make(chan error, total)
	for k := range total {
		procs[k] = projection.NewProcessor(pool, nil, wakeupConfig(l, k, total))
		go func() { errs <- procs[k].Run(ctx, proj(k)) }()
	}
	eventually(t, "listener connected and first batches done", func() bool {
		if !l.Stats().Connected {
			return false
		}
		for _, p := range procs {
			if p.Stats().Batches == 0 {
				return false
			}
		}
		return true
	})
	return procs, func() {
		cancel()
		for range total {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
}

func wakeups(procs []*projection.Processor) int64 {
	var n int64
	for _, p := range procs {
		n += p.Stats().Wakeups
	}
	return n
}

// A caught-up processor that polls once an hour handles each appended
// event promptly: the append's notification wakes it.
func TestWakeupOnAppend(t *testing.T) {
	pool, store := newStore(t, enableWakeups, newAppliedTable)
	l := projection.NewListener(pool, nil)
	procs, stop := startProcessors(t, pool, l, func(int) projection.Projection { return applyLog{name: "log"} }, 1)
	defer stop()

	for i := 1; i <= 3; i++ {
		if _, err := store.Append(t.Context(), pool, "Order", fmt.Sprintf("o-%d", i), projection.NoStream, ev("Placed")); err != nil {
			t.Fatal(err)
		}
		// After the first, an event can be handled only by a batch that
		// a wakeup started: the last batch handled an event, so the
		// processor sleeps an hour unless woken.
		eventually(t, fmt.Sprintf("event %d applied", i), func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == i })
	}
	// The listener's first connect wakes everyone once; the later events
	// each took a wakeup of their own.
	if n := wakeups(procs); n < 2 {
		t.Errorf("processor woken %d times, want at least 2", n)
	}
	if st := l.Stats(); st.Notifications < 3 || st.Reconnects != 0 || !st.NotificationsEnabled {
		t.Errorf("listener stats %+v, want at least 3 notifications, no reconnect, notifications enabled", st)
	}
}

// findListener returns the backend pid of the session that listens for
// wakeups.
func findListener(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var pid int
	eventually(t, "the listening session", func() bool {
		err := pool.QueryRow(t.Context(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN "projectionist_events"' AND pid <> pg_backend_pid()`).Scan(&pid)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return err == nil
	})
	return pid
}

// A listener whose connection is killed listens again and wakes every
// processor once: events appended while it was down (their notifications
// lost) and after it is back are all handled, exactly once.
func TestWakeupListenerReconnects(t *testing.T) {
	pool, store := newStore(t, enableWakeups, newAppliedTable)
	l := projection.NewListener(pool, nil)
	const partitions = 3
	procs, stop := startProcessors(t, pool, l, func(k int) projection.Projection { return applyLog{name: "log", key: k} }, partitions)
	defer stop()

	appendN(t, pool, store, 10, 2, "before")
	eventually(t, "first events applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 20 })

	for round := 1; round <= 2; round++ {
		pid := findListener(t, pool)
		if _, err := pool.Exec(t.Context(), "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		// Appended while the listener is down, or not yet noticed so.
		appendN(t, pool, store, 10, 2, fmt.Sprintf("down%d", round))
		eventually(t, "listener back", func() bool { st := l.Stats(); return st.Connected && st.Reconnects >= int64(round) })
		eventually(t, "events appended while down applied", func() bool {
			return queryInt(t, pool, "SELECT count(*) FROM applied") == 20+40*(round-1)+20
		})
		appendN(t, pool, store, 10, 2, fmt.Sprintf("after%d", round))
		eventually(t, "events appended after the reconnect applied", func() bool {
			return queryInt(t, pool, "SELECT count(*) FROM applied") == 20+40*round
		})
	}
	// Each event once (the primary key refuses a second), by its owner.
	var misplaced int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM applied a JOIN events e ON e.event_id = a.event_id
		WHERE e.partition_hash % $1 <> a.partition_key`, partitions).Scan(&misplaced); err != nil || misplaced != 0 {
		t.Errorf("%d events applied by another partition than their owner (%v)", misplaced, err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM events"); n != 100 {
		t.Errorf("%d events, want 100", n)
	}
	_ = procs
}

// A plain-SQL INSERT, as a writer in another language sends it (no Go
// library, literal values, the simple protocol), wakes the processors:
// one row wakes its owner, a multi-row INSERT across partitions wakes
// every partition it touches.
func TestWakeupOnPlainSQLInsert(t *testing.T) {
	pool, _ := newStore(t, enableWakeups, newAppliedTable)
	l := projection.NewListener(pool, nil)
	procs, stop := startProcessors(t, pool, l, func(k int) projection.Projection { return applyLog{name: "log", key: k} }, 2)
	defer stop()

	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(t.Context(), sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
		VALUES ('Order', 'sql-1', 1, gen_random_uuid(), 'Placed', '{}')`)
	eventually(t, "one-row INSERT applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 1 })

	var values string
	for i := range 20 {
		if i > 0 {
			values += ", "
		}
		values += fmt.Sprintf("('Order', 'sql-many-%d', 1, gen_random_uuid(), 'Placed', '{}')", i)
	}
	exec(`INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload) VALUES ` + values)
	eventually(t, "multi-row INSERT applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 21 })
	if n := queryInt(t, pool, "SELECT count(DISTINCT partition_key) FROM applied"); n != 2 {
		t.Errorf("events applied by %d partitions, want 2", n)
	}
	if n := wakeups(procs); n < 2 {
		t.Errorf("processors woken %d times, want at least 2", n)
	}
}

// The default config, and the zero one, only poll: even against a
// database that sends wakeups, the processor opens no listening
// connection.
func TestWakeupsPollByDefault(t *testing.T) {
	for name, cfg := range map[string]projection.ProcessorConfig{
		"DefaultProcessorConfig": projection.DefaultProcessorConfig(),
		"zero":                   {},
	} {
		t.Run(name, func(t *testing.T) {
			if cfg.Wakeups != projection.WakeupsPoll {
				t.Errorf("Wakeups = %s, want poll", cfg.Wakeups)
			}
			pool, store := newStore(t, enableWakeups, newAppliedTable)
			cfg.PollInterval = 20 * time.Millisecond
			proc := projection.NewProcessor(pool, store, cfg)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- proc.Run(ctx, applyLog{name: "log"}) }()
			for round := 1; round <= 3; round++ {
				appendN(t, pool, store, 3, 1, fmt.Sprint("Order", round))
				eventually(t, "events applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 3*round })
			}
			if n := queryInt(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`); n != 0 {
				t.Errorf("%d listening sessions, want none", n)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if st := proc.Stats(); st.Wakeups != 0 {
				t.Errorf("Wakeups = %d, want 0", st.Wakeups)
			}
		})
	}
}

// Without projectionist.wakeups = on (the database's default) the
// schema sends no notification, and processors that listen anyway poll at
// PollInterval, not at WakeupPollInterval: with an hour of the latter,
// every event is still handled. The listener warns once, naming the
// setting, however often it connects.
func TestWakeupsListenWithoutDatabaseSetting(t *testing.T) {
	pool, store := newStore(t, newAppliedTable)
	var logs proctest.SyncBuffer
	l := projection.NewListener(pool, slog.New(slog.NewTextHandler(&logs, nil)))
	cfg := projection.DefaultProcessorConfig()
	cfg.Wakeups, cfg.Listener = projection.WakeupsListen, l
	cfg.PollInterval, cfg.WakeupPollInterval = 50*time.Millisecond, time.Hour
	proc := projection.NewProcessor(pool, store, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- proc.Run(ctx, applyLog{name: "log"}) }()
	eventually(t, "listener connected", func() bool { return l.Stats().Connected })
	if st := l.Stats(); st.NotificationsEnabled {
		t.Errorf("listener stats %+v, want notifications not enabled", st)
	}
	for round := 1; round <= 3; round++ {
		appendN(t, pool, store, 5, 1, fmt.Sprint("Order", round))
		eventually(t, fmt.Sprintf("round %d applied", round), func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 5*round })
	}
	// A reconnect checks again, and does not warn again.
	pid := findListener(t, pool)
	if _, err := pool.Exec(t.Context(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	eventually(t, "listener back", func() bool { st := l.Stats(); return st.Connected && st.Reconnects >= 1 })
	appendN(t, pool, store, 5, 1, "OrderAfter")
	eventually(t, "events after the reconnect applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 20 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Notifications != 0 || st.NotificationsEnabled {
		t.Errorf("listener stats %+v, want no notification and notifications not enabled", st)
	}
	var warns int
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "sends no wakeups") {
			warns++
			if !strings.Contains(line, "setting=projectionist.wakeups") || !strings.Contains(line, "SET projectionist.wakeups = on") {
				t.Errorf("warning does not name the setting and its command: %s", line)
			}
		}
	}
	if warns != 1 {
		t.Errorf("%d warnings that the database sends no wakeups, want 1; logs:\n%s", warns, logs.String())
	}
}

// In a database with wakeups on, a writer's session with
// projectionist.wakeups = off appends without
// notifying; processors still handle its events, by polling: a lost
// notification costs latency, never an event.
func TestWakeupsOffForAWriter(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, enableWakeups, newAppliedTable)

	// A listener of our own sees what the trigger sends.
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN "projectionist_events"`); err != nil {
		t.Fatal(err)
	}
	quiet := func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL projectionist.wakeups = off"); err != nil {
			return err
		}
		_, err := store.Append(ctx, tx, "Order", "quiet-1", projection.NoStream, ev("Placed"))
		return err
	}
	if err := pgx.BeginFunc(ctx, pool, quiet); err != nil {
		t.Fatal(err)
	}
	loud, err := store.Append(ctx, pool, "Order", "loud-1", projection.NoStream, ev("Placed"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("e %d %d", loud[0].TransactionID, projection.PartitionHash("loud-1"))
	if n.Payload != want {
		t.Errorf("first notification %q, want %q (the quiet append must not notify)", n.Payload, want)
	}

	// Processors that listen find quiet appends at their safety poll.
	cfg := projection.DefaultProcessorConfig()
	cfg.Wakeups, cfg.PollInterval, cfg.WakeupPollInterval = projection.WakeupsListen, 50*time.Millisecond, 200*time.Millisecond
	proc := projection.NewProcessor(pool, store, cfg)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- proc.Run(rctx, applyLog{name: "log"}) }()
	eventually(t, "both events applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 2 })
	for i := range 20 {
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL projectionist.wakeups = off"); err != nil {
				return err
			}
			_, err := store.Append(ctx, tx, "Order", fmt.Sprintf("quiet-more-%d", i), projection.NoStream, ev("Placed"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "quiet events applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 22 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
