package main

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// named is a projection that handles nothing.
type named string

func (n named) Name() string { return string(n) }
func (named) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error {
	return nil
}

// forget deletes every row kept for the projection it names, and none of
// another projection's; it wants --yes, and says when there is nothing.
func TestForget(t *testing.T) {
	ctx := t.Context()
	dsn, pool, _ := deadLetterDB(t) // two dead letters of revenue
	for _, name := range []string{"revenue", "user-count"} {
		if err := projection.NewProcessor(pool, nil, projection.ProcessorConfig{}).CatchUp(ctx, named(name)); err != nil {
			t.Fatal(err)
		}
		if err := projection.RequestReset(ctx, pool, name, "r1"); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"DATABASE_URL": dsn}
	rows := func(name string) (n int) {
		t.Helper()
		err := pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM projection_checkpoints WHERE projection_name = $1) +
			(SELECT count(*) FROM projection_topology WHERE projection_name = $1) +
			(SELECT count(*) FROM projection_frontier WHERE projection_name = $1) +
			(SELECT count(*) FROM projection_dead_letters WHERE projection_name = $1) +
			(SELECT count(*) FROM projection_resets WHERE projection_name = $1)`, name).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := rows("user-count")

	r := run(t, env, "forget", "--projection", "revenue")
	if r.code != 2 || !strings.Contains(r.stderr, "pass --yes to confirm") || rows("revenue") == 0 {
		t.Errorf("forget without --yes: want exit 2, the rows kept\n%s", r)
	}
	r = run(t, env, "forget", "--projection", "revenue", "--yes")
	want := "forgot projection \"revenue\": deleted 1 checkpoints, 0 frontier rows, 2 dead letters, 1 topology rows, 1 reset requests\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("forget: want stdout %q\n%s", want, r)
	}
	if n := rows("revenue"); n != 0 {
		t.Errorf("%d rows of revenue left, want 0", n)
	}
	if n := rows("user-count"); n != before || n == 0 {
		t.Errorf("user-count has %d rows after revenue was forgotten, want its %d", n, before)
	}
	r = run(t, env, "forget", "--projection", "revenue", "--yes")
	if r.code != 0 || r.stdout != "projection \"revenue\" has no rows: nothing to forget\n" {
		t.Errorf("forget again: want nothing to forget\n%s", r)
	}
}
