package main

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// deadLetterDB returns a migrated database holding two dead letters of
// projection "revenue", and their event ids.
func deadLetterDB(t *testing.T) (string, *pgxpool.Pool, []uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	pool := pgtest.OpenPool(t, dsn)
	if _, err := projection.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for i, agg := range []string{"order-1", "order-2"} {
		evs, err := projection.NewStore().Append(ctx, pool, "Order", agg, projection.AnyVersion, projection.Event{EventType: "OrderPlaced"})
		if err != nil {
			t.Fatal(err)
		}
		e := evs[0]
		if _, err := pool.Exec(ctx, `INSERT INTO projection_dead_letters
			(projection_name, event_id, partition_key, global_position, transaction_id, aggregate_type, aggregate_id, event_type, error)
			VALUES ('revenue', $1, $2, $3, $4, $5, $6, $7, $8)`,
			e.EventID, i, e.GlobalPosition, e.TransactionID, e.AggregateType, e.AggregateID, e.EventType, "amount_cents missing\nsecond line"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.EventID)
	}
	return dsn, pool, ids
}

func TestDeadLettersCommands(t *testing.T) {
	dsn, pool, ids := deadLetterDB(t)
	env := map[string]string{"DATABASE_URL": dsn}

	r := run(t, env, "dead-letters", "list", "--projection", "revenue")
	if r.code != 0 || !strings.Contains(r.stdout, "POSITION") || !strings.Contains(r.stdout, ids[0].String()) ||
		!strings.Contains(r.stdout, "Order/order-2") || !strings.Contains(r.stdout, "amount_cents missing") || strings.Contains(r.stdout, "second line") {
		t.Fatalf("list: want a table of both dead letters with the error's first line\n%s", r)
	}
	r = run(t, env, "dead-letters", "list", "--projection", "revenue", "--partition", "1")
	if r.code != 0 || strings.Contains(r.stdout, ids[0].String()) || !strings.Contains(r.stdout, ids[1].String()) {
		t.Errorf("list --partition 1: want only the second\n%s", r)
	}
	r = run(t, env, "dead-letters", "list", "--projection", "other")
	if r.code != 0 || !strings.Contains(r.stdout, `projection "other" has no dead letters`) {
		t.Errorf("list of a projection without dead letters\n%s", r)
	}
	r = run(t, env, "dead-letters", "show", "--projection", "revenue", "--id", ids[0].String())
	if r.code != 0 || !strings.Contains(r.stdout, "Order order-1") || !strings.Contains(r.stdout, "second line") {
		t.Errorf("show: want the details and the whole error\n%s", r)
	}

	for _, args := range [][]string{
		{"retry", "--projection", "revenue"},
		{"discard", "--projection", "revenue"},
		{"retry", "--projection", "revenue", "--all", "--id", ids[0].String()},
		{"retry", "--id", ids[0].String()},
		{"show", "--projection", "revenue", "--id", "nope"},
		{"list", "--projection", "revenue", "--limit", "0"},
	} {
		r := run(t, env, append([]string{"dead-letters"}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("dead-letters %v: want exit 2 and a usage error\n%s", args, r)
		}
	}
	if n := scalar(t, pool, "SELECT count(*) FROM projection_dead_letters WHERE retry_requested_at IS NOT NULL"); n != 0 {
		t.Fatalf("%d retries requested by refused commands, want 0", n)
	}

	r = run(t, env, "dead-letters", "retry", "--projection", "revenue", "--id", ids[0].String())
	if r.code != 0 || scalar(t, pool, "SELECT count(*) FROM projection_dead_letters WHERE retry_requested_at IS NOT NULL AND event_id = $1", ids[0]) != 1 {
		t.Errorf("retry --id: want the request recorded\n%s", r)
	}
	r = run(t, env, "dead-letters", "retry", "--projection", "revenue", "--all")
	if r.code != 0 || !strings.Contains(r.stdout, "retry requested for 2 dead letters") {
		t.Errorf("retry --all\n%s", r)
	}
	r = run(t, env, "dead-letters", "discard", "--projection", "revenue", "--id", ids[0].String())
	if r.code != 0 || scalar(t, pool, "SELECT count(*) FROM projection_dead_letters WHERE event_id = $1", ids[0]) != 0 {
		t.Errorf("discard --id: want the row gone\n%s", r)
	}
	r = run(t, env, "dead-letters", "discard", "--projection", "revenue", "--id", ids[0].String())
	if r.code != 1 || !strings.Contains(r.stderr, "dead letter not found") {
		t.Errorf("discard of a discarded one: want exit 1 and not found\n%s", r)
	}
	r = run(t, env, "dead-letters", "discard", "--projection", "revenue", "--all")
	if r.code != 0 || scalar(t, pool, "SELECT count(*) FROM projection_dead_letters") != 0 {
		t.Errorf("discard --all: want no rows left\n%s", r)
	}

	r = run(t, map[string]string{"DATABASE_URL": "postgres://u:s3cr3t-pw@127.0.0.1:1/x?connect_timeout=1"}, "dead-letters", "list", "--projection", "revenue")
	if r.code != 1 || strings.Contains(r.stderr, "s3cr3t-pw") {
		t.Errorf("unreachable database: want exit 1 without the password\n%s", r)
	}
	r = run(t, nil, "dead-letters", "retry", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--all") || !strings.Contains(r.stdout, "applied once") {
		t.Errorf("retry --help\n%s", r)
	}
}
