package worker

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/internal/proctest"
)

// The worker reads its times from Config.Clock: the lag's measurement
// time that /metrics exports, and the downtime it logs when the
// projections run again, which is the time the clock moved while the
// database refused connections, not the wall clock's.
func TestWorkerTimesFollowClock(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, repeat("Happened", 5)...)
	began := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(began)
	var logs proctest.SyncBuffer
	cfg := Config{DatabaseURL: dsn, TotalPartitions: 1, PollInterval: 5 * time.Millisecond, Clock: clk}
	cfg.Logger = cfg.newLogger(&logs)
	r := start(t, cfg, applyOnce{name: "clocked"})
	waitFor(t, "every event applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 5 })
	waitFor(t, "the lag measured at the clock's time", func() bool {
		at, ok := r.metric(sample("projectionist_lag_sampled_timestamp_seconds", "clocked"))
		return ok && at == float64(began.Unix())
	})

	// The database refuses the worker: its connections end and new ones
	// are refused, until the clock has moved 90s on.
	admin := pgtest.OpenPool(t, pgtest.ServerURL(t))
	name := pgtest.QueryValue[string](t, pool, "SELECT current_database()")
	if _, err := admin.Exec(t.Context(), "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(t.Context(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'projectionist-worker'", name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker to say the projections are not running", func() bool {
		return strings.Contains(logs.String(), "projections not running; retrying with backoff")
	})
	clk.SetTime(began.Add(90 * time.Second))
	if _, err := admin.Exec(t.Context(), "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	var downtime string
	waitFor(t, "the worker to say the projections run again", func() bool {
		for line := range strings.Lines(logs.String()) {
			var rec struct{ Msg, Downtime string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "projections running again" {
				downtime = rec.Downtime
				return true
			}
		}
		return false
	})
	if downtime != "1m30s" {
		t.Errorf("downtime logged %q, want 1m30s (the clock's step)", downtime)
	}
}
