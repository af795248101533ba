package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// resettable is applyOnce with a Reset hook that clears its rows.
type resettable struct{ applyOnce }

func (r resettable) Reset(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "DELETE FROM applied WHERE projection = $1", r.name)
	return err
}

// A worker carries out its projections' pending resets when it starts,
// before any batch: a projection with the Reset hook replays from the
// beginning (applyOnce would fail on an event applied twice, so the
// replay only succeeds if its rows were cleared with the checkpoints), and
// one without it has its request refused and runs on from its checkpoint.
func TestWorkerAppliesPendingReset(t *testing.T) {
	ctx := t.Context()
	dsn, pool := newDatabase(t)
	mustAppend(t, pool, repeat("Happened", 30)...)
	cfg := Config{DatabaseURL: dsn, TotalPartitions: 1, PollInterval: 10 * time.Millisecond}
	projections := []projection.Projection{resettable{applyOnce{name: "with_hook"}}, applyOnce{name: "without_hook"}}
	applied := func(name string) int {
		return count(t, pool, "SELECT count(*) FROM applied WHERE projection = $1", name)
	}
	r := start(t, cfg, projections...)
	waitFor(t, "both projections to apply the events", func() bool { return applied("with_hook") == 30 && applied("without_hook") == 30 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"with_hook", "without_hook"} {
		if err := projection.RequestReset(ctx, pool, name, "rebuild-1"); err != nil {
			t.Fatal(err)
		}
	}
	// The replay's marker: a row the reset must delete.
	if _, err := pool.Exec(ctx, "INSERT INTO applied VALUES ('with_hook', gen_random_uuid())"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, pool, repeat("Happened", 5)...)
	r = start(t, cfg, projections...)
	waitFor(t, "both projections to apply the new events", func() bool { return applied("with_hook") == 35 && applied("without_hook") == 35 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	st, err := projection.GetResetStatus(ctx, pool, "with_hook")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Succeeded("rebuild-1") {
		t.Errorf("with_hook's reset: %+v, want rebuild-1 done", st)
	}
	if n, err := projection.EventsProcessed(ctx, pool, "with_hook"); err != nil || n != 35 {
		t.Errorf("with_hook processed %d events since the reset (%v), want 35", n, err)
	}
	st, err = projection.GetResetStatus(ctx, pool, "without_hook")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Failed("rebuild-1") || !strings.Contains(st.Error, "does not implement projection.Resetter") {
		t.Errorf("without_hook's reset: %+v, want rebuild-1 refused", st)
	}
	if n, err := projection.EventsProcessed(ctx, pool, "without_hook"); err != nil || n != 35 {
		t.Errorf("without_hook processed %d events (%v), want 35: its checkpoint kept", n, err)
	}
}
