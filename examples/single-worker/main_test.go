package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

func TestMain(m *testing.M) { projectiontest.Main(m) }

func TestSingleWorkerExample(t *testing.T) {
	ctx := context.Background()
	dsn := projectiontest.NewDatabase(t)

	var out bytes.Buffer
	if err := run(ctx, dsn, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	const want = `appended 6 events
user_stats:
  user-1   ada@example.com        active
  user-2   grace@example.com      active
  user-3   linus@example.com      deactivated
  user-4   margaret@example.com   active
  user-5   barbara@example.com    active
  5 users, 4 active
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}

	// Running again appends nothing and changes nothing.
	out.Reset()
	if err := run(ctx, dsn, &out); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if got := out.String(); got != "appended 0 events"+want[len("appended 6 events"):] {
		t.Errorf("second run output:\n%s", got)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var users, active, processed int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE active) FROM user_stats`).Scan(&users, &active); err != nil {
		t.Fatal(err)
	}
	if users != demo.Users || active != demo.ActiveUsers {
		t.Errorf("user_stats has %d users, %d active; want %d, %d", users, active, demo.Users, demo.ActiveUsers)
	}
	if err := conn.QueryRow(ctx, `SELECT events_processed FROM projection_checkpoints WHERE projection_name = 'user_count'`).Scan(&processed); err != nil {
		t.Fatal(err)
	}
	if processed != demo.UserEvents {
		t.Errorf("user_count processed %d events, want %d", processed, demo.UserEvents)
	}
}
