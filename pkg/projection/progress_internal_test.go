package projection

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/projectionist/projectionist/internal/pgtest"
)

// The progress read walks the backlog once for all partitions, not once per
// partition (issue 32: four partitions at the start of a rebuild of a
// 657k-event log took over 5 s), and stops at its limit: counted from the
// plan PostgreSQL ran, not timed. Beyond the limit the counts are what the
// first events after the furthest-behind checkpoint hold, LagAtLeast says
// so, and PassedHead is false.
func TestProgressExaminesTheBacklogOnce(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	const events, partitions = 2000, 4
	for tx := range events / 100 {
		if _, err := pool.Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
			SELECT 'Account', 'acct-' || i, $1::bigint, gen_random_uuid(), 'Entered', '{}' FROM generate_series(0, 99) AS i`, tx+1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "ANALYZE events"); err != nil {
		t.Fatal(err)
	}
	if _, err := SetTopology(ctx, pool, "p", partitions); err != nil {
		t.Fatal(err)
	}

	var plan []struct {
		Plan explainNode `json:"Plan"`
	}
	var raw []byte
	if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+progressSQL, "p", LagCountLimit).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
		t.Fatalf("EXPLAIN output %s: %v", raw, err)
	}
	var examined int64
	for _, sc := range plan[0].Plan.scansOf("events", nil) {
		examined += (sc.ActualRows + sc.RemovedByFilter + sc.RemovedByRecheck) * max(1, sc.ActualLoops)
	}
	// The head and each partition's last passed event add one row each.
	if limit := int64(events + 1 + partitions); examined > limit {
		t.Errorf("the progress read of %d partitions examined %d rows of a %d-event log, want at most %d (one walk)",
			partitions, examined, events, limit)
	}

	got, err := GetProgress(ctx, pool, "p")
	if err != nil {
		t.Fatal(err)
	}
	if got.Lag != events || got.LagAtLeast || got.PassedHead(1) {
		t.Errorf("unbounded reading: lag %d at least %v passed head 1 %v, want %d, false, false", got.Lag, got.LagAtLeast, got.PassedHead(1), events)
	}

	const limit = 500
	got, err = getProgress(ctx, pool, "p", limit)
	if err != nil {
		t.Fatal(err)
	}
	if !got.LagAtLeast || got.Lag != limit || got.PassedHead(0) {
		t.Errorf("reading stopped at %d events: lag %d at least %v passed head 0 %v, want %d, true, false", limit, got.Lag, got.LagAtLeast, got.PassedHead(0), limit)
	}
	for _, pp := range got.Partitions {
		want := pgtest.QueryValue[int64](t, pool, `SELECT count(*) FROM (SELECT partition_hash FROM events
			ORDER BY transaction_id, global_position LIMIT $1) AS w WHERE partition_hash % $2 = $3`, limit, partitions, pp.PartitionKey)
		if pp.Lag != want {
			t.Errorf("partition %d: lag %d among the first %d events, want %d", pp.PartitionKey, pp.Lag, limit, want)
		}
	}
}
