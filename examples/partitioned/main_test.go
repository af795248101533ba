package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

func TestMain(m *testing.M) { projectiontest.Main(m) }

func TestPartitionedExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := projectiontest.NewDatabase(t)

	// One "process" per partition, run one after another so that each
	// output is deterministic: the first one appends the demo events, the
	// others find them there.
	const total = 4
	var outs [total]bytes.Buffer
	for key := range total {
		if err := run(ctx, dsn, key, total, &outs[key]); err != nil {
			t.Fatalf("partition %d: %v\n%s", key, err, outs[key].String())
		}
	}
	const want0 = `partition 0/4: appended 12 events
  User  user-1   1 events
  User  user-5   1 events
  Order order-2  1 events
  Order order-6  1 events
partition 0/4 handled 4 events of 4 aggregates
`
	if got := outs[0].String(); got != want0 {
		t.Errorf("partition 0 output:\n%s\nwant:\n%s", got, want0)
	}
	for key := 1; key < total; key++ {
		if got := outs[key].String(); !strings.HasPrefix(got, fmt.Sprintf("partition %d/4: appended 0 events\n", key)) {
			t.Errorf("partition %d output:\n%s", key, got)
		}
	}
	if got := outs[3].String(); !strings.HasSuffix(got, "partition 3/4 handled 2 events of 2 aggregates\n") {
		t.Errorf("partition 3 output:\n%s", got)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT aggregate_id, partition_key, events FROM aggregate_owners`)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var key int32
	var n, sum int64
	var aggregates int
	_, err = pgx.ForEachRow(rows, []any{&id, &key, &n}, func() error {
		if wantKey := int32(projection.PartitionHash(id) % total); key != wantKey {
			t.Errorf("%s handled by partition %d, want %d", id, key, wantKey)
		}
		aggregates++
		sum += n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if aggregates != demo.Users+demo.OrderEvents || sum != demo.Events {
		t.Errorf("aggregate_owners has %d aggregates, %d events; want %d, %d", aggregates, sum, demo.Users+demo.OrderEvents, demo.Events)
	}

	// Restarted as 2 processes, after more events arrived: the first one
	// switches the topology exactly, and every event is still counted once.
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := projection.NewStore()
	for i := range 30 {
		id := fmt.Sprintf("user-%d", i%12) // existing and new aggregates
		if _, err := store.Append(ctx, pool, "User", id, projection.AnyVersion, projection.Event{EventType: "EmailVerified"}); err != nil {
			t.Fatal(err)
		}
	}
	for key := range 2 {
		if err := run(ctx, dsn, key, 2, &bytes.Buffer{}); err != nil {
			t.Fatalf("partition %d of 2: %v", key, err)
		}
	}
	var wrong int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT aggregate_type, aggregate_id, count(*) AS n FROM events GROUP BY 1, 2) e
		FULL JOIN aggregate_owners o USING (aggregate_type, aggregate_id)
		WHERE o.events IS DISTINCT FROM e.n`).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if wrong != 0 {
		t.Errorf("after rescaling 4 -> 2, %d aggregates have a handled count other than their event count", wrong)
	}
	var gen, parts int
	if err := pool.QueryRow(ctx, "SELECT generation, total_partitions FROM projection_topology WHERE projection_name = 'aggregate_owners'").Scan(&gen, &parts); err != nil || gen != 2 || parts != 2 {
		t.Errorf("topology after restart as 2 = generation %d, %d partitions (%v); want 2, 2", gen, parts, err)
	}
}

func TestPartitionedExampleEnv(t *testing.T) {
	for _, tc := range []struct {
		key, total string
		wantKey    int
		wantTotal  int
		wantErr    string
	}{
		{key: "0", total: "4", wantKey: 0, wantTotal: 4},
		{key: "3", total: "4", wantKey: 3, wantTotal: 4},
		{key: "0", total: "1", wantKey: 0, wantTotal: 1},
		{key: "0", total: "", wantErr: "TOTAL_PARTITIONS is not set; set it to the number of partitions, at least 1"},
		{key: "", total: "4", wantErr: "PARTITION_KEY is not set; set it to this process's partition, from 0 to 3"},
		{key: "0", total: "four", wantErr: `TOTAL_PARTITIONS is "four", not an integer; set it to the number of partitions, at least 1`},
		{key: "1.5", total: "4", wantErr: `PARTITION_KEY is "1.5", not an integer; set it to this process's partition, from 0 to 3`},
		{key: "0", total: "0", wantErr: "TOTAL_PARTITIONS is 0; it must be at least 1"},
		{key: "4", total: "4", wantErr: "PARTITION_KEY is 4; with TOTAL_PARTITIONS=4 it must be from 0 to 3"},
		{key: "-1", total: "4", wantErr: "PARTITION_KEY is -1; with TOTAL_PARTITIONS=4 it must be from 0 to 3"},
	} {
		env := map[string]string{"PARTITION_KEY": tc.key, "TOTAL_PARTITIONS": tc.total}
		key, total, err := partitionFromEnv(func(name string) string { return env[name] })
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("PARTITION_KEY=%q TOTAL_PARTITIONS=%q: error %v, want %q", tc.key, tc.total, err, tc.wantErr)
			}
			continue
		}
		if err != nil || key != tc.wantKey || total != tc.wantTotal {
			t.Errorf("PARTITION_KEY=%q TOTAL_PARTITIONS=%q: got %d, %d, %v", tc.key, tc.total, key, total, err)
		}
	}
}
