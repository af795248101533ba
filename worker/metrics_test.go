package worker

import (
	"context"
	"testing"
	"time"

	"github.com/projectionist/projectionist/pkg/projection"
)

// A scrape reads the sampler's last measurements and takes no connection:
// with the sampler held to its first rounds (an hour's interval) and the
// only processor stuck in Handle, scrapes leave the pool's acquire count
// alone; with the pool closed they still serve the last measurements, and
// the next round reports the database down while keeping them.
func TestScrapeDoesNotQuery(t *testing.T) {
	dsn, pool := newDatabase(t)
	const n = 12
	mustAppend(t, pool, repeat("Happened", n)...)
	// The topology exists before the worker starts, so that the one
	// round measures the lag against it.
	if _, err := projection.SetTopology(t.Context(), pool, "held", 1); err != nil {
		t.Fatal(err)
	}
	proj := gated("held")
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1, MetricsInterval: time.Hour}, proj)
	<-proj.entered
	// Two rounds: one at the start, one after the migration; the next is
	// an hour away.
	waitFor(t, "the sampler's two first rounds", func() bool {
		_, _, _, rounds := r.w.samples.snapshot()
		return rounds == 2
	})

	want := map[string]float64{
		sample("projectionist_lag_events", "held"):   n,
		sample("projectionist_dead_letters", "held"): 0,
		"projectionist_database_up":                  1,
	}
	check := func(when string) {
		t.Helper()
		for s, v := range want {
			if got, ok := r.metric(s); !ok || got != v {
				t.Errorf("%s: %s = %v (found: %t), want %v", when, s, got, ok, v)
			}
		}
		if _, ok := r.metric(sample("projectionist_horizon_stall_seconds", "held")); !ok {
			t.Errorf("%s: no projectionist_horizon_stall_seconds", when)
		}
		for _, s := range []string{sample("projectionist_lag_seconds", "held"), sample("projectionist_lag_sampled_timestamp_seconds", "held")} {
			if v, ok := r.metric(s); !ok || v <= 0 {
				t.Errorf("%s: %s = %v (found: %t), want > 0", when, s, v, ok)
			}
		}
	}
	acquired := r.w.pool.Stat().AcquireCount()
	for range 5 {
		check("while the pool is open")
	}
	if now := r.w.pool.Stat().AcquireCount(); now != acquired {
		t.Errorf("5 scrapes acquired %d connections from the pool, want none", now-acquired)
	}

	close(proj.gate) // Close waits for the connection Handle holds
	r.w.pool.Close()
	check("with the pool closed")

	r.w.sampleRound(context.Background())
	want["projectionist_database_up"] = 0
	check("after a round with the pool closed")
}

// projectionist_events_fetched_total and _skipped_total count exactly:
// after a switch from 2 partitions to 1, the new partition reads every
// event and skips those old partition 1 applied.
func TestFetchedAndSkippedCounters(t *testing.T) {
	ctx := t.Context()
	dsn, pool := newDatabase(t)
	const n = 40
	mustAppend(t, pool, repeat("Happened", n)...)
	if _, err := projection.SetTopology(ctx, pool, "rescaled", 2); err != nil {
		t.Fatal(err)
	}
	cfg := projection.DefaultProcessorConfig()
	cfg.PartitionKey, cfg.TotalPartitions = 1, 2
	if err := projection.NewProcessor(pool, nil, cfg).CatchUp(ctx, applyOnce{name: "rescaled"}); err != nil {
		t.Fatal(err)
	}
	applied := count(t, pool, "SELECT count(*) FROM events WHERE partition_hash % 2 = 1")
	if applied == 0 || applied == n {
		t.Fatalf("test set-up: %d of %d events in old partition 1; choose other aggregate ids", applied, n)
	}

	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1}, applyOnce{name: "rescaled"})
	waitFor(t, "every event applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == n })
	waitFor(t, "the counters to be final", func() bool {
		v, _ := r.metric(sample("projectionist_events_handled_total", "rescaled"))
		return v == float64(n-applied)
	})
	for s, v := range map[string]float64{
		sample("projectionist_events_fetched_total", "rescaled"): n,
		sample("projectionist_events_skipped_total", "rescaled"): float64(applied),
		sample("projectionist_events_handled_total", "rescaled"): float64(n - applied),
	} {
		if got, ok := r.metric(s); !ok || got != v {
			t.Errorf("%s = %v (found: %t), want %v", s, got, ok, v)
		}
	}
}
