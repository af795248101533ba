// Command worker-pool runs one projection on 4 partitions in one process
// with runner.RunProjectionPartitions.
//
// Each partition is a goroutine with its own checkpoint. An aggregate's
// events all go to one partition (hash(aggregate id) % 4), so they stay in
// order; different aggregates are handled in parallel.
//
//	DATABASE_URL='postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable' \
//	    go run ./examples/worker-pool
//
// A service would run the partitions until shutdown; this example cancels
// them once every event has been handled, then prints the read model and
// how the events were spread over the partitions.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

// partitions is how many partitions (goroutines) the projection runs on.
const partitions = 4

// eventCountsSchema is EventCounterProjection's read model: how many events
// each aggregate has.
const eventCountsSchema = `
CREATE TABLE IF NOT EXISTS aggregate_event_counts (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    events         bigint NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
)`

// EventCounterProjection counts events per aggregate in the database, and in
// total in memory.
//
// ⚠️ Thread safety: with a worker pool, all partitions share this one
// projection instance, so Handle is called from 4 goroutines at once. Any
// state the projection keeps in its own fields MUST be thread-safe:
//
//   - ✅ handled is an atomic.Int64: safe.
//   - ✅ the database write goes through the batch's transaction, and the
//     database handles concurrency (each partition owns its aggregates' rows).
//   - ❌ a plain `count int` incremented with count++ would be a data race.
type EventCounterProjection struct {
	handled atomic.Int64
}

// Name identifies the projection's checkpoints (one per partition).
func (*EventCounterProjection) Name() string { return "aggregate_event_counts" }

// Handle counts the event.
func (p *EventCounterProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	p.handled.Add(1) // thread-safe
	_, err := tx.Exec(ctx, `
		INSERT INTO aggregate_event_counts (aggregate_type, aggregate_id, events) VALUES ($1, $2, 1)
		ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
		SET events = aggregate_event_counts.events + 1`,
		event.AggregateType, event.AggregateID)
	return err
}

func main() {
	dsn, err := demo.DatabaseURL("worker-pool")
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker-pool:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, dsn, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker-pool:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn string, out io.Writer) error {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("parsing DATABASE_URL: %w", err)
	}
	// Every partition holds a connection while it runs a batch; leave room
	// for them all plus the application's own queries.
	cfg.MaxConns = max(cfg.MaxConns, partitions+2)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer pool.Close()

	if _, err := projection.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if err := demo.CreateTables(ctx, pool, eventCountsSchema); err != nil {
		return err
	}
	store := projection.NewStore()
	n, err := demo.Seed(ctx, pool, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "appended %d events\n", n)

	proj := &EventCounterProjection{}
	total, err := demo.CountEvents(ctx, pool)
	if err != nil {
		return fmt.Errorf("counting events: %w", err)
	}

	// In a service:
	//
	//	err := runner.RunProjectionPartitions(ctx, pool, store, proj, partitions)
	//
	// runs until ctx is cancelled (then returns nil) or a partition fails.
	err = demo.RunUntilProcessed(ctx, pool, map[string]int64{proj.Name(): total}, func(ctx context.Context) error {
		return runner.RunProjectionPartitions(ctx, pool, store, proj, partitions)
	})
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "handled %d events in this run\n", proj.handled.Load())
	if err := demo.PrintCheckpoints(ctx, pool, out, proj.Name()); err != nil {
		return err
	}
	return printEventCounts(ctx, pool, out)
}

func printEventCounts(ctx context.Context, db projection.DBTX, out io.Writer) error {
	rows, err := db.Query(ctx, `
		SELECT aggregate_type, aggregate_id, events FROM aggregate_event_counts
		ORDER BY aggregate_type DESC, length(aggregate_id), aggregate_id`)
	if err != nil {
		return fmt.Errorf("reading aggregate_event_counts: %w", err)
	}
	var typ, id string
	var n int64
	fmt.Fprintln(out, "aggregate_event_counts:")
	_, err = pgx.ForEachRow(rows, []any{&typ, &id, &n}, func() error {
		fmt.Fprintf(out, "  %-5s %-8s %d events (partition %d)\n", typ, id, n, projection.PartitionOf(id, partitions))
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading aggregate_event_counts: %w", err)
	}
	return nil
}
