package demo_test

import (
	"testing"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// Every demo projection can be rebuilt declaratively, and the rebuilt read
// models are exact: revenue (a non-idempotent sum) equals the log's
// OrderPlaced amounts, activity_log (which fails on a duplicate) has every
// event once, even though the read models were wrong before the rebuild.
func TestDemoProjectionsRebuild(t *testing.T) {
	ctx := t.Context()
	pool := migrated(t)
	generate(t, pool, 500, 20)
	for _, p := range demo.Projections() {
		catchUp(t, pool, p, 2)
	}
	// Wrong read models, as after a bug.
	for _, sql := range []string{"UPDATE revenue SET total_cents = total_cents * 2", "DELETE FROM user_stats WHERE random() < 0.5"} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range demo.Projections() {
		if err := projection.RequestReset(ctx, pool, p.Name(), "fix"); err != nil {
			t.Fatal(err)
		}
		if r, err := projection.ApplyPendingReset(ctx, pool, p); err != nil || r.Outcome != projection.ResetApplied {
			t.Fatalf("ApplyPendingReset(%s) = %+v, %v; want applied", p.Name(), r, err)
		}
		catchUp(t, pool, p, 3)
	}
	if got, want := queryInt(t, pool, "SELECT sum(total_cents)::bigint FROM revenue"),
		queryInt(t, pool, "SELECT sum((payload->>'amount_cents')::bigint)::bigint FROM events WHERE event_type = 'OrderPlaced'"); got != want {
		t.Errorf("rebuilt revenue is %d cents, the log's orders sum to %d", got, want)
	}
	if got, want := queryInt(t, pool, "SELECT count(*) FROM activity_log"), queryInt(t, pool, "SELECT count(*) FROM events"); got != want {
		t.Errorf("rebuilt activity_log has %d rows, the log %d events", got, want)
	}
	if got, want := queryInt(t, pool, "SELECT count(*) FROM user_stats"), queryInt(t, pool, "SELECT count(*) FROM events WHERE event_type = 'UserCreated'"); got != want {
		t.Errorf("rebuilt user_stats has %d users, the log %d UserCreated", got, want)
	}
}
