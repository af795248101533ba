package demo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/examples/internal/demo"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type failing struct{}

func (failing) Name() string { return "failing" }
func (failing) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error {
	return errors.New("boom")
}

// The examples' wait loop must return a projection's failure, not wait
// forever for a checkpoint that will never move.
func TestExampleHelperRunUntilProcessedReturnsFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := pgtest.NewPool(t)
	if _, err := projection.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := demo.CreateTables(ctx, pool, demo.ActivityLogSchema); err != nil {
		t.Fatal(err)
	}
	store := projection.NewStore()
	if _, err := demo.Seed(ctx, pool, store); err != nil {
		t.Fatal(err)
	}
	configs := []runner.ProjectionConfig{
		{Projection: &demo.ActivityLogProjection{}, ProcessorConfig: projection.DefaultProcessorConfig()},
		{Projection: failing{}, ProcessorConfig: projection.DefaultProcessorConfig()},
	}
	err := demo.RunUntilProcessed(ctx, pool, map[string]int64{"activity_log": demo.Events, "failing": demo.Events}, func(ctx context.Context) error {
		return runner.RunMultipleProjections(ctx, pool, store, configs)
	})
	var herr *projection.HandlerError
	if !errors.As(err, &herr) || herr.Projection != "failing" {
		t.Fatalf("got %v, want the failing projection's HandlerError", err)
	}
	if ctx.Err() != nil {
		t.Fatal("timed out")
	}
}

// Cancelling the caller's context stops the wait with its error.
func TestExampleHelperRunUntilProcessedCancelled(t *testing.T) {
	pool := pgtest.NewPool(t)
	if _, err := projection.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := demo.RunUntilProcessed(ctx, pool, map[string]int64{"never": 1}, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}

func TestExampleHelperCountEvents(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := projection.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	store := projection.NewStore()
	if n, err := demo.Seed(ctx, pool, store); err != nil || n != demo.Events {
		t.Fatalf("Seed = %d, %v; want %d", n, err, demo.Events)
	}
	if n, err := demo.Seed(ctx, pool, store); err != nil || n != 0 {
		t.Fatalf("second Seed = %d, %v; want 0", n, err)
	}
	for _, tc := range []struct {
		types []string
		want  int64
	}{{nil, demo.Events}, {[]string{"User"}, demo.UserEvents}, {[]string{"Order"}, demo.OrderEvents}, {[]string{"User", "Order"}, demo.Events}} {
		if n, err := demo.CountEvents(ctx, pool, tc.types...); err != nil || n != tc.want {
			t.Errorf("CountEvents(%v) = %d, %v; want %d", tc.types, n, err, tc.want)
		}
	}
}
