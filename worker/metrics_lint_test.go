package worker

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestMetricsLint runs every metric a running worker serves (its own, the
// build information, the Go and process collectors) through client_golang's
// promlint: names, units, help texts and counter suffixes as Prometheus
// expects them. The connection pool's metrics keep the names
// github.com/IBM/pgxpoolprometheus gives them, which dashboards built for
// that library expect, and which promlint faults (counters named _count,
// durations in _ns): they are checked to be there, not linted.
func TestMetricsLint(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, "Happened", "Happened")
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1}, applyOnce{name: "p"})
	waitFor(t, "both events applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 2 })
	waitFor(t, "a round of the sampler", func() bool { _, _, _, rounds := r.w.samples.snapshot(); return rounds > 0 })
	mfs, err := r.w.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"projectionist_events_handled_total", "projectionist_batches_total", "projectionist_lag_events",
		"projectionist_dead_letters", "projectionist_build_info", "projectionist_batch_duration_seconds", "projectionist_topology_mismatch",
		"projectionist_wakeups_total", "projectionist_listener_notifications_total", "projectionist_listener_reconnects_total",
		"projectionist_listener_connected", "projectionist_listener_notifications_enabled",
		"projectionist_events_fetched_total", "projectionist_events_skipped_total", "projectionist_lag_seconds",
		"projectionist_lag_sampled_timestamp_seconds", "projectionist_database_up", "projectionist_horizon_stall_seconds",
		"pgxpool_acquire_count", "pgxpool_acquired_conns", "pgxpool_idle_conns", "pgxpool_max_conns", "pgxpool_total_conns"} {
		if !names[want] {
			t.Errorf("no %s among the gathered metrics", want)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "pgxpool_") {
			continue
		}
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
