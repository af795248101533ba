package projection_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// A server that accepts connections but does not answer (its postmaster
// and backends stopped with SIGSTOP) fails a running processor with a
// TimeoutError within its statement timeout, not never; once it answers
// again a new run carries on from the checkpoint, nothing lost or doubled.
func TestProcessorReportsHungDatabase(t *testing.T) {
	srv := pgtest.NewServer(t)
	cfg, err := pgxpool.ParseConfig(srv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := projection.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	newAppliedTable(t, pool)
	store := projection.NewStore()
	appendN(t, pool, store, 5, 10, "user")

	pc := projection.DefaultProcessorConfig()
	pc.BatchSize, pc.StatementTimeout, pc.BatchTimeout = 10, 2*time.Second, 10*time.Second
	proj := applyLog{name: "log"}
	if err := projection.NewProcessor(pool, store, pc).CatchUp(t.Context(), proj); err != nil {
		t.Fatal(err)
	}

	ran := make(chan error, 1)
	running := projection.NewProcessor(pool, store, pc)
	go func() { ran <- running.Run(t.Context(), proj) }()
	eventually(t, "past its start-up, polling", func() bool { return running.Stats().Batches > 0 })
	srv.Freeze(t)
	frozen := time.Now()
	var err2 error
	select {
	case err2 = <-ran:
	case <-time.After(2 * time.Minute):
		t.Fatal("the processor did not report the hung database")
	}
	t.Logf("hung database reported after %s: %v", time.Since(frozen).Round(time.Millisecond), err2)
	var te *projection.TimeoutError
	if !errors.As(err2, &te) || !errors.Is(err2, projection.ErrTimeout) || te.Projection != "log" {
		t.Fatalf("Run = %v, want a *TimeoutError", err2)
	}

	srv.Thaw(t)
	thawed := time.Now()
	appendN(t, pool, store, 5, 10, "order")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := projection.NewProcessor(pool, store, pc).CatchUp(ctx, proj); err != nil {
		t.Fatal(err)
	}
	t.Logf("caught up %s after the server resumed", time.Since(thawed).Round(time.Millisecond))
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 100 {
		t.Errorf("applied %d events, want 100", n)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM events e LEFT JOIN applied a USING (event_id) WHERE a.event_id IS NULL"); n != 0 {
		t.Errorf("%d events not applied", n)
	}
}
