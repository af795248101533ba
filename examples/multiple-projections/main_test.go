package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

func TestMain(m *testing.M) { projectiontest.Main(m) }

func TestMultipleProjectionsExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := projectiontest.NewDatabase(t)

	var out bytes.Buffer
	if err := run(ctx, dsn, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	const want = `appended 12 events
user_stats:
  user-1   ada@example.com        active
  user-2   grace@example.com      active
  user-3   linus@example.com      deactivated
  user-4   margaret@example.com   active
  user-5   barbara@example.com    active
  5 users, 4 active
revenue: 6 orders, $218.98
activity_log:
  OrderPlaced      6
  UserCreated      5
  UserDeactivated  1
  12 events
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	check := func(sql string, want int64) {
		t.Helper()
		var got int64
		if err := conn.QueryRow(ctx, sql).Scan(&got); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if got != want {
			t.Errorf("%s = %d, want %d", sql, got, want)
		}
	}
	checkAll := func() {
		t.Helper()
		check(`SELECT count(*) FROM user_stats`, demo.Users)
		check(`SELECT count(*) FROM user_stats WHERE active`, demo.ActiveUsers)
		check(`SELECT sum(total_cents)::bigint FROM revenue`, demo.RevenueCents)
		check(`SELECT sum((payload->>'amount_cents')::bigint)::bigint FROM events WHERE event_type = 'OrderPlaced'`, demo.RevenueCents)
		check(`SELECT sum(orders)::bigint FROM revenue`, demo.OrderEvents)
		check(`SELECT count(*) FROM activity_log`, demo.Events)
		check(`SELECT count(*) FROM events`, demo.Events)
		check(`SELECT count(*) FROM activity_log a JOIN events e USING (event_id)`, demo.Events)
		check(`SELECT events_processed FROM projection_checkpoints WHERE projection_name = 'user_count'`, demo.UserEvents)
		check(`SELECT events_processed FROM projection_checkpoints WHERE projection_name = 'revenue'`, demo.OrderEvents)
		check(`SELECT events_processed FROM projection_checkpoints WHERE projection_name = 'activity_log'`, demo.Events)
	}
	checkAll()

	// A second run appends nothing, and the non-idempotent revenue total
	// is not counted twice.
	out.Reset()
	if err := run(ctx, dsn, &out); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if !strings.HasPrefix(out.String(), "appended 0 events\n") || !strings.Contains(out.String(), "revenue: 6 orders, $218.98\n") {
		t.Errorf("second run output:\n%s", out.String())
	}
	checkAll()
}
