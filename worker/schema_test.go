package worker

import (
	"testing"

	"github.com/projectionist/projectionist/internal/pgtest"
)

// A worker whose DATABASE_URL names a schema in its search_path migrates,
// reads and measures there: its events, checkpoints and metrics are the
// schema's, and public stays empty.
func TestWorkerInASchemaOfItsOwn(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	admin := pgtest.OpenPool(t, dsn)
	if _, err := admin.Exec(t.Context(), "CREATE SCHEMA shop"); err != nil {
		t.Fatal(err)
	}
	shop := pgtest.WithSearchPath(dsn, "shop")
	pool := prepareDatabase(t, shop)
	mustAppend(t, pool, repeat("Happened", 12)...)

	r := start(t, Config{DatabaseURL: shop, TotalPartitions: 1}, applyOnce{name: "counted"})
	waitFor(t, "every event handled and the lag 0", func() bool {
		handled, _ := r.metric(sample("projectionist_events_handled_total", "counted"))
		lag, ok := r.metric(sample("projectionist_lag_events", "counted"))
		return handled == 12 && lag == 0 && ok
	})
	if got := count(t, admin, "SELECT count(*) FROM shop.applied"); got != 12 {
		t.Errorf("shop.applied has %d rows, want 12", got)
	}
	if got := count(t, admin, "SELECT count(*) FROM shop.projection_checkpoints WHERE projection_name = 'counted'"); got != 1 {
		t.Errorf("shop.projection_checkpoints has %d rows of counted, want 1", got)
	}
	if got := count(t, admin, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); got != 0 {
		t.Errorf("%d tables in public, want none", got)
	}
}
