package worker

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestMetricsLint runs every metric a running worker serves (its own, the
// build information, the Go and process collectors) through client_golang's
// promlint: names, units, help texts and counter suffixes as Prometheus
// expects them.
func TestMetricsLint(t *testing.T) {
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, "Happened", "Happened")
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1}, applyOnce{name: "p"})
	waitFor(t, "both events applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 2 })
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
		"projectionist_listener_connected", "projectionist_listener_notifications_enabled"} {
		if !names[want] {
			t.Errorf("no %s among the gathered metrics", want)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
