// Command multiple-projections runs three projections in one process with
// runner.RunMultipleProjections:
//
//   - UserCountProjection keeps user_stats (User events only),
//   - RevenueProjection keeps a running total of orders (Order events only),
//   - ActivityLogProjection records every event.
//
// Each projection has its own checkpoint and its own processor config (here,
// its own batch size); they share the connection pool. The runner is
// fail-fast: if one projection fails, it stops the others and returns the
// error.
//
//	DATABASE_URL='postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable' \
//	    go run ./examples/multiple-projections
//
// A service would run the runner until shutdown. This example cancels it
// once the checkpoints show that every projection has handled every event,
// then prints the three read models.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

func main() {
	dsn, err := demo.DatabaseURL("multiple-projections")
	if err != nil {
		fmt.Fprintln(os.Stderr, "multiple-projections:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, dsn, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "multiple-projections:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn string, out io.Writer) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer pool.Close()

	if _, err := projection.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if err := demo.CreateTables(ctx, pool, demo.UserStatsSchema, demo.RevenueSchema, demo.ActivityLogSchema); err != nil {
		return err
	}

	store := projection.NewStore()
	n, err := demo.Seed(ctx, pool, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "appended %d events\n", n)

	// Each projection gets its own config. Batch size trades latency for
	// throughput: the activity log is cheap per event, so it takes big
	// batches; revenue takes small ones.
	userCfg := projection.DefaultProcessorConfig()

	revenueCfg := projection.DefaultProcessorConfig()
	revenueCfg.BatchSize = 10

	activityCfg := projection.DefaultProcessorConfig()
	activityCfg.BatchSize = 500

	configs := []runner.ProjectionConfig{
		{Projection: &demo.UserCountProjection{}, ProcessorConfig: userCfg},
		{Projection: &demo.RevenueProjection{}, ProcessorConfig: revenueCfg},
		{Projection: &demo.ActivityLogProjection{}, ProcessorConfig: activityCfg},
	}

	// How many events each projection must handle to have seen them all:
	// the scoped projections only receive their aggregate type.
	want := map[string]int64{}
	for name, types := range map[string][]string{"user_count": {"User"}, "revenue": {"Order"}, "activity_log": nil} {
		if want[name], err = demo.CountEvents(ctx, pool, types...); err != nil {
			return fmt.Errorf("counting events: %w", err)
		}
	}

	// In a service:
	//
	//	err := runner.RunMultipleProjections(ctx, pool, store, configs)
	//
	// runs until ctx is cancelled (then returns nil) or a projection fails.
	err = demo.RunUntilProcessed(ctx, pool, want, func(ctx context.Context) error {
		return runner.RunMultipleProjections(ctx, pool, store, configs)
	})
	if err != nil {
		return err
	}

	if err := demo.PrintUserStats(ctx, pool, out); err != nil {
		return err
	}
	if err := demo.PrintRevenue(ctx, pool, out); err != nil {
		return err
	}
	return demo.PrintActivityLog(ctx, pool, out)
}
