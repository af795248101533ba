package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

func TestMain(m *testing.M) { projectiontest.Main(m) }

func TestWorkerPoolExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := projectiontest.NewDatabase(t)

	var out bytes.Buffer
	if err := run(ctx, dsn, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	const want = `appended 12 events
handled 12 events in this run
checkpoints of aggregate_event_counts:
  partition 0/4: 4 events
  partition 1/4: 3 events
  partition 2/4: 3 events
  partition 3/4: 2 events
aggregate_event_counts:
  User  user-1   1 events (partition 0)
  User  user-2   1 events (partition 1)
  User  user-3   2 events (partition 2)
  User  user-4   1 events (partition 3)
  User  user-5   1 events (partition 0)
  Order order-1  1 events (partition 1)
  Order order-2  1 events (partition 0)
  Order order-3  1 events (partition 3)
  Order order-4  1 events (partition 2)
  Order order-5  1 events (partition 1)
  Order order-6  1 events (partition 0)
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// Every aggregate's count matches the log, and the checkpoints add up.
	var mismatched, total int64
	err = conn.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE c.events IS DISTINCT FROM e.n), coalesce(sum(c.events), 0)::bigint
		FROM (SELECT aggregate_type, aggregate_id, count(*) AS n FROM events GROUP BY 1, 2) e
		FULL JOIN aggregate_event_counts c USING (aggregate_type, aggregate_id)`).Scan(&mismatched, &total)
	if err != nil {
		t.Fatal(err)
	}
	if mismatched != 0 || total != demo.Events {
		t.Errorf("%d aggregates miscounted, %d events counted; want 0, %d", mismatched, total, demo.Events)
	}
	rows, err := conn.Query(ctx, `SELECT partition_key, events_processed FROM projection_checkpoints WHERE projection_name = 'aggregate_event_counts'`)
	if err != nil {
		t.Fatal(err)
	}
	perPartition := map[int32]int64{}
	var key int32
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&key, &n}, func() error { perPartition[key] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	var wantPer [partitions]int64
	for _, id := range []string{"user-1", "user-2", "user-3", "user-3", "user-4", "user-5", "order-1", "order-2", "order-3", "order-4", "order-5", "order-6"} {
		wantPer[int(projection.PartitionHash(id))%partitions]++
	}
	for k := range partitions {
		if perPartition[int32(k)] != wantPer[k] {
			t.Errorf("partition %d processed %d events, want %d", k, perPartition[int32(k)], wantPer[k])
		}
	}

	// A second run finds nothing to do.
	out.Reset()
	if err := run(ctx, dsn, &out); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if got := out.String(); got != "appended 0 events\nhandled 0 events in this run\n"+want[len("appended 12 events\nhandled 12 events in this run\n"):] {
		t.Errorf("second run output:\n%s", got)
	}
}
