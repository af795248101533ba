package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// examplePool returns a pool on a new, migrated database. An application
// would use pgxpool.New(ctx, os.Getenv("DATABASE_URL")) and then
// projection.Migrate.
func examplePool() *pgxpool.Pool {
	pool := pgtest.MustPool()
	if _, err := projection.Migrate(context.Background(), pool); err != nil {
		log.Fatal(err)
	}
	return pool
}

func ExampleStore_Append() {
	ctx := context.Background()
	pool := examplePool()
	defer pool.Close()
	store := projection.NewStore()

	// NoStream: the user must not exist yet.
	stored, err := store.Append(ctx, pool, "User", "u1", projection.NoStream,
		projection.Event{EventType: "UserCreated", Payload: json.RawMessage(`{"email":"ada@example.com"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created at version", stored[0].AggregateVersion)

	// ExactVersion: append only if the user is still at the version we
	// decided on.
	stored, err = store.Append(ctx, pool, "User", "u1", projection.ExactVersion(1),
		projection.Event{EventType: "EmailChanged", Payload: json.RawMessage(`{"email":"ada@lovelace.dev"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("email changed at version", stored[0].AggregateVersion)

	// A writer that also read version 1 now loses, and writes nothing. The
	// remedy is to reload the aggregate and decide again.
	_, err = store.Append(ctx, pool, "User", "u1", projection.ExactVersion(1),
		projection.Event{EventType: "UserDeactivated"})
	var conflict *projection.ConcurrencyError
	if errors.As(err, &conflict) {
		fmt.Printf("conflict: expected %v, actual version %d\n", conflict.Expected, conflict.Actual)
	}
	fmt.Println(errors.Is(err, projection.ErrConcurrencyConflict))
	fmt.Println(err)
	// Output:
	// created at version 1
	// email changed at version 2
	// conflict: expected version 1, actual version 2
	// true
	// concurrency conflict on User "u1": expected version 1, found 2
}

func ExampleStore_ReadAggregateStream() {
	ctx := context.Background()
	pool := examplePool()
	defer pool.Close()
	store := projection.NewStore()

	for _, amount := range []int{10, 20, 30, 40, 50} {
		_, err := store.Append(ctx, pool, "Account", "acc-1", projection.AnyVersion,
			projection.Event{EventType: "Deposited", Payload: json.RawMessage(fmt.Sprintf(`{"amount":%d}`, amount))})
		if err != nil {
			log.Fatal(err)
		}
	}

	// A snapshot taken at version 3 says the balance was 60. Both bounds
	// are inclusive, so read from the version after it.
	snapshotVersion, balance := int64(3), 60
	from := snapshotVersion + 1
	events, err := store.ReadAggregateStream(ctx, pool, "Account", "acc-1", &from, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range events {
		var deposit struct {
			Amount int `json:"amount"`
		}
		if err := json.Unmarshal(e.Payload, &deposit); err != nil {
			log.Fatal(err)
		}
		balance += deposit.Amount
		fmt.Printf("version %d: +%d\n", e.AggregateVersion, deposit.Amount)
	}
	fmt.Println("balance:", balance)
	// Output:
	// version 4: +40
	// version 5: +50
	// balance: 150
}
