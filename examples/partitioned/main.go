// Command partitioned runs one partition of a projection: the "separate
// processes" scaling pattern. Start the same binary once per partition, each
// with its own PARTITION_KEY, all with the same TOTAL_PARTITIONS:
//
//	export DATABASE_URL='postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable'
//	PARTITION_KEY=0 TOTAL_PARTITIONS=4 go run ./examples/partitioned   # terminal 1
//	PARTITION_KEY=1 TOTAL_PARTITIONS=4 go run ./examples/partitioned   # terminal 2
//	PARTITION_KEY=2 TOTAL_PARTITIONS=4 go run ./examples/partitioned   # terminal 3
//	PARTITION_KEY=3 TOTAL_PARTITIONS=4 go run ./examples/partitioned   # terminal 4
//
// Each process handles the aggregates whose hash(aggregate id) %
// TOTAL_PARTITIONS is its PARTITION_KEY, with its own checkpoint; the
// processes may run on different machines. Each records in the read model
// which partition handled each aggregate, and prints its share.
//
// Every process migrates and appends the demo events; that is safe to do
// concurrently (each demo stream is appended once). This example then runs
// until caught up and exits; a real worker would call Run and keep going
// until it is stopped.
//
// The partition count is recorded in the database. Starting a process with
// another TOTAL_PARTITIONS switches it, exactly (projection.SetTopology):
// no event is skipped or applied twice; processes still running with the
// old count follow the switch on their next batch.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// aggregateOwnersSchema is OwnerProjection's read model.
const aggregateOwnersSchema = `
CREATE TABLE IF NOT EXISTS aggregate_owners (
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    partition_key  integer NOT NULL,
    events         bigint  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
)`

// OwnerProjection counts each aggregate's events and records which
// partition handled them. Each process has its own instance, so it can keep
// its partition key in a field.
type OwnerProjection struct {
	PartitionKey int
}

// Name identifies the projection's checkpoints (one per partition).
func (*OwnerProjection) Name() string { return "aggregate_owners" }

// Handle counts the event against its aggregate.
func (p *OwnerProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO aggregate_owners (aggregate_type, aggregate_id, partition_key, events) VALUES ($1, $2, $3, 1)
		ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
		SET events = aggregate_owners.events + 1, partition_key = EXCLUDED.partition_key`,
		event.AggregateType, event.AggregateID, p.PartitionKey)
	return err
}

func main() {
	dsn, err := demo.DatabaseURL("partitioned")
	if err != nil {
		fmt.Fprintln(os.Stderr, "partitioned:", err)
		os.Exit(2)
	}
	key, total, err := partitionFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "partitioned:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, dsn, key, total, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "partitioned:", err)
		os.Exit(1)
	}
}

// partitionFromEnv reads PARTITION_KEY and TOTAL_PARTITIONS.
func partitionFromEnv(getenv func(string) string) (key, total int, err error) {
	total, err = intFromEnv(getenv, "TOTAL_PARTITIONS", "the number of partitions, at least 1")
	if err != nil {
		return 0, 0, err
	}
	if total < 1 {
		return 0, 0, fmt.Errorf("TOTAL_PARTITIONS is %d; it must be at least 1", total)
	}
	key, err = intFromEnv(getenv, "PARTITION_KEY", fmt.Sprintf("this process's partition, from 0 to %d", total-1))
	if err != nil {
		return 0, 0, err
	}
	if key < 0 || key >= total {
		return 0, 0, fmt.Errorf("PARTITION_KEY is %d; with TOTAL_PARTITIONS=%d it must be from 0 to %d", key, total, total-1)
	}
	return key, total, nil
}

func intFromEnv(getenv func(string) string, name, want string) (int, error) {
	s := getenv(name)
	if s == "" {
		return 0, fmt.Errorf("%s is not set; set it to %s", name, want)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s is %q, not an integer; set it to %s", name, s, want)
	}
	return n, nil
}

func run(ctx context.Context, dsn string, partitionKey, totalPartitions int, out io.Writer) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer pool.Close()

	if _, err := projection.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if err := demo.CreateTables(ctx, pool, aggregateOwnersSchema); err != nil {
		return err
	}
	store := projection.NewStore()
	n, err := demo.Seed(ctx, pool, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "partition %d/%d: appended %d events\n", partitionKey, totalPartitions, n)

	config := projection.DefaultProcessorConfig()
	config.PartitionKey = partitionKey       // this worker's partition
	config.TotalPartitions = totalPartitions // the number of workers
	processor := projection.NewProcessor(pool, store, config)
	proj := &OwnerProjection{PartitionKey: partitionKey}

	// A long-running worker: err := processor.Run(ctx, proj)
	if err := processor.CatchUp(ctx, proj); err != nil {
		return err
	}
	return printOwned(ctx, pool, out, partitionKey, totalPartitions)
}

// printOwned prints the aggregates this partition handled.
func printOwned(ctx context.Context, db projection.DBTX, out io.Writer, partitionKey, totalPartitions int) error {
	rows, err := db.Query(ctx, `
		SELECT aggregate_type, aggregate_id, events FROM aggregate_owners WHERE partition_key = $1
		ORDER BY aggregate_type DESC, length(aggregate_id), aggregate_id`, partitionKey)
	if err != nil {
		return fmt.Errorf("reading aggregate_owners: %w", err)
	}
	var typ, id string
	var n, total int64
	var aggregates int
	_, err = pgx.ForEachRow(rows, []any{&typ, &id, &n}, func() error {
		fmt.Fprintf(out, "  %-5s %-8s %d events\n", typ, id, n)
		aggregates++
		total += n
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading aggregate_owners: %w", err)
	}
	fmt.Fprintf(out, "partition %d/%d handled %d events of %d aggregates\n", partitionKey, totalPartitions, total, aggregates)
	return nil
}
