package worker

import (
	"testing"
	"time"

	"github.com/projectionist/projectionist/pkg/projection"
)

// A worker with WAKEUPS=listen, against a database with
// projectionist.wakeups = on, wakes its partitions on commit: with a poll
// interval of an hour, events appended after it went quiet are still
// applied, and the wakeup and listener metrics say how.
func TestWakeupsAndMetrics(t *testing.T) {
	dsn, pool := newDatabase(t)
	if _, err := pool.Exec(t.Context(), `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET projectionist.wakeups = on', current_database());
	END $$`); err != nil {
		t.Fatal(err)
	}
	pool.Reset() // the test's appends come from sessions that see it
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, PollInterval: time.Hour, WakeupPollInterval: time.Hour,
		Wakeups: projection.WakeupsListen}, applyOnce{name: "p"}, applyOnce{name: "q"})
	waitFor(t, "listening", func() bool { v, ok := r.metric("projectionist_listener_connected"); return ok && v == 1 })
	if v, ok := r.metric("projectionist_listener_notifications_enabled"); !ok || v != 1 {
		t.Errorf("projectionist_listener_notifications_enabled = %v (found %v), want 1", v, ok)
	}
	for round := 1; round <= 3; round++ {
		mustAppend(t, pool, "Happened", "Happened")
		waitFor(t, "events applied by both projections", func() bool {
			return count(t, pool, "SELECT count(*) FROM applied") == 2*2*round
		})
	}
	for _, p := range []string{"p", "q"} {
		if v, ok := r.metric(sample("projectionist_wakeups_total", p)); !ok || v < 2 {
			t.Errorf("projectionist_wakeups_total of %s = %v (found %v), want at least 2", p, v, ok)
		}
	}
	if v, ok := r.metric("projectionist_listener_notifications_total"); !ok || v < 3 {
		t.Errorf("projectionist_listener_notifications_total = %v (found %v), want at least 3", v, ok)
	}
	if n := count(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`); n != 1 {
		t.Errorf("%d listening sessions for 2 projections, want 1", n)
	}
}

// By default a worker only polls: it opens no listening connection, and
// its listener metrics read 0.
func TestWakeupsPollByDefault(t *testing.T) {
	dsn, pool := newDatabase(t)
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, PollInterval: 20 * time.Millisecond}, applyOnce{name: "p"})
	for round := 1; round <= 2; round++ {
		mustAppend(t, pool, "Happened", "Happened")
		waitFor(t, "events applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 2*round })
	}
	if n := count(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`); n != 0 {
		t.Errorf("%d listening sessions, want none", n)
	}
	for _, m := range []string{"projectionist_listener_connected", "projectionist_listener_notifications_enabled"} {
		if v, ok := r.metric(m); !ok || v != 0 {
			t.Errorf("%s = %v (found %v), want 0", m, v, ok)
		}
	}
}
