package worker

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
)

// TestHungDatabaseIsReported freezes the worker's database server (its
// postmaster and every backend, SIGSTOP) with the default bounds: the
// worker says so in one log line and in /readyz, and once the server
// resumes it carries on by itself, nothing lost or doubled.
func TestHungDatabaseIsReported(t *testing.T) {
	srv := pgtest.NewServer(t)
	dsn := srv.NewDatabase(t)
	pool := prepareDatabase(t, dsn)
	var logs proctest.SyncBuffer
	cfg := Config{DatabaseURL: dsn, TotalPartitions: 1, BatchSize: 10, PollInterval: 20 * time.Millisecond}
	cfg.Logger = cfg.newLogger(&logs)
	r := start(t, cfg, applyOnce{name: "frozen"})
	mustAppend(t, pool, repeat("Happened", 30)...)
	waitFor(t, "every event applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 30 })
	waitFor(t, "ready", func() bool { code, _ := get(r.url + "/readyz"); return code == http.StatusOK })

	srv.Freeze(t)
	frozen := time.Now()
	var body string
	waitFor(t, "/readyz to say the database is not responding", func() bool {
		var code int
		code, body = get(r.url + "/readyz")
		return code == http.StatusServiceUnavailable && strings.HasPrefix(body, "not running (database not responding), retrying: ")
	})
	reported := time.Since(frozen)
	if warn := warnings(logs.String()); len(warn) != 1 || !strings.Contains(warn[0], `"state":"database not responding"`) {
		t.Errorf("warnings, want one that says the database is not responding:\n%s", strings.Join(warn, "\n"))
	}

	srv.Thaw(t)
	thawed := time.Now()
	waitFor(t, "ready again", func() bool { code, _ := get(r.url + "/readyz"); return code == http.StatusOK })
	recovered := time.Since(thawed)
	mustAppend(t, pool, repeat("Happened", 30)...)
	waitFor(t, "every event applied", func() bool {
		return count(t, pool, "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT FROM applied a WHERE a.event_id = e.event_id)") == 0
	})
	if applied, events := count(t, pool, "SELECT count(*) FROM applied"), count(t, pool, "SELECT count(*) FROM events"); applied != 60 || events != 60 {
		t.Errorf("applied %d rows for %d events, want 60 for 60", applied, events)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("run = %v, want nil", err)
	}
	t.Logf("hung database reported after %s (/readyz: %s); ready %s after the server resumed",
		reported.Round(100*time.Millisecond), strings.TrimSpace(body), recovered.Round(100*time.Millisecond))
}

// warnings returns the log's lines at level WARN.
func warnings(log string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, `"level":"`+slog.LevelWarn.String()+`"`) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}
