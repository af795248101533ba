package projection_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

type countProj struct{}

func (countProj) Name() string { return "count" }
func (countProj) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, "INSERT INTO seen (event_id) VALUES ($1)", e.EventID)
	return err
}

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	store := projection.NewStore()
	for i := range 250 {
		if _, err := store.Append(ctx, pool, "User", fmt.Sprint("u", i%10), projection.AnyVersion, projection.Event{EventType: "UserCreated"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE seen (event_id uuid PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := projection.NewProcessor(pool, store, projection.DefaultProcessorConfig()).CatchUp(ctx, countProj{}); err != nil {
		t.Fatal(err)
	}
	var n int
	pool.QueryRow(ctx, "SELECT count(*) FROM seen").Scan(&n)
	if n != 250 {
		t.Fatalf("seen %d", n)
	}
}
