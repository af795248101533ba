// Command single-worker runs one projection with one processor: the
// simplest way to keep a read model up to date.
//
// It migrates the event store schema, creates the user_stats read model,
// appends the demo users' events, projects them with UserCountProjection
// until caught up, and prints user_stats:
//
//	DATABASE_URL='postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable' \
//	    go run ./examples/single-worker
//
// Running it again appends nothing new (each demo stream is appended with
// NoStream) and finds the projection already caught up.
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
)

func main() {
	dsn, err := demo.DatabaseURL("single-worker")
	if err != nil {
		fmt.Fprintln(os.Stderr, "single-worker:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, dsn, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "single-worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn string, out io.Writer) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer pool.Close()

	// The event store's own tables (events, projection_checkpoints). Safe
	// to call on every start, from any number of processes.
	if _, err := projection.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	// The read model is the application's own table.
	if err := demo.CreateTables(ctx, pool, demo.UserStatsSchema); err != nil {
		return err
	}

	store := projection.NewStore()
	n, err := demo.SeedUsers(ctx, pool, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "appended %d events\n", n)

	proj := &demo.UserCountProjection{}
	processor := projection.NewProcessor(pool, store, projection.DefaultProcessorConfig())

	// CatchUp handles every event committed before the call, then returns.
	// A service would call Run instead, which keeps polling for new events
	// until ctx is cancelled:
	//
	//	err := processor.Run(ctx, proj)
	if err := processor.CatchUp(ctx, proj); err != nil {
		return err
	}
	return demo.PrintUserStats(ctx, pool, out)
}
