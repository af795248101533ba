// Package demo is the demo domain that the projectionist binary and the
// examples share: the projections from the projections guide
// (UserCountProjection "user_count", RevenueProjection "revenue",
// ActivityLogProjection "activity_log"), their read-model tables, the
// domain's event types and payloads, a fixed set of demo events, and helpers
// to print read models and to stop a runner once it has caught up.
//
// The stock worker runs [Projections] after [EnsureSchema]; package loadgen
// generates the domain's events in volume.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// DatabaseURL returns $DATABASE_URL, or an error that says how to set it.
func DatabaseURL(example string) (string, error) {
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		return dsn, nil
	}
	return "", fmt.Errorf("DATABASE_URL is not set: set it to a PostgreSQL connection string whose user may create tables, e.g.\n\n"+
		"  DATABASE_URL='postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable' go run ./examples/%s", example)
}

// readModelLock is the advisory lock key CreateTables holds, so that
// processes starting together do not race on CREATE TABLE IF NOT EXISTS
// (which can fail with a unique violation on pg_type when two sessions
// create the same table at once).
const readModelLock = 0x64656d6f // "demo"

// CreateTables runs read-model DDL (CREATE TABLE IF NOT EXISTS ...) in one
// transaction under an advisory lock, so any number of processes may run it
// at once. db is a pool, a connection, or a transaction (the DDL then runs
// in a savepoint and commits with it).
func CreateTables(ctx context.Context, db projection.DBTX, schemas ...string) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(readModelLock)); err != nil {
			return fmt.Errorf("locking read-model schema: %w", err)
		}
		for _, s := range schemas {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("creating read model: %w", err)
			}
		}
		return nil
	})
}

// EnsureSchema creates the read-model tables of every projection of
// [Projections], safely when several processes start at once (see
// [CreateTables]). The event store's own tables come from
// [projection.Migrate].
func EnsureSchema(ctx context.Context, db projection.DBTX) error {
	var schemas []string
	for _, p := range Projections() {
		if o, ok := p.(SchemaOwner); ok {
			schemas = append(schemas, o.Schema())
		}
	}
	return CreateTables(ctx, db, schemas...)
}

// stream is one aggregate's demo events.
type stream struct {
	aggregateType, aggregateID string
	events                     []projection.Event
}

// base is when the demo events happened; fixed so that output is stable.
var base = time.Date(2024, 1, 15, 9, 0, 0, 0, time.UTC)

func event(minute int, eventType string, payload any) projection.Event {
	e := projection.Event{EventType: eventType, CreatedAt: base.Add(time.Duration(minute) * time.Minute)}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			panic(err)
		}
		e.Payload = b
	}
	return e
}

var users = []stream{
	{"User", "user-1", []projection.Event{event(0, "UserCreated", UserCreated{Email: "ada@example.com"})}},
	{"User", "user-2", []projection.Event{event(1, "UserCreated", UserCreated{Email: "grace@example.com"})}},
	{"User", "user-3", []projection.Event{
		event(2, "UserCreated", UserCreated{Email: "linus@example.com"}),
		event(30, "UserDeactivated", nil),
	}},
	{"User", "user-4", []projection.Event{event(3, "UserCreated", UserCreated{Email: "margaret@example.com"})}},
	{"User", "user-5", []projection.Event{event(4, "UserCreated", UserCreated{Email: "barbara@example.com"})}},
}

var orders = []stream{
	{"Order", "order-1", []projection.Event{event(10, "OrderPlaced", OrderPlaced{CustomerID: "user-1", AmountCents: 1250})}},
	{"Order", "order-2", []projection.Event{event(11, "OrderPlaced", OrderPlaced{CustomerID: "user-2", AmountCents: 4999})}},
	{"Order", "order-3", []projection.Event{event(12, "OrderPlaced", OrderPlaced{CustomerID: "user-1", AmountCents: 300})}},
	{"Order", "order-4", []projection.Event{event(13, "OrderPlaced", OrderPlaced{CustomerID: "user-4", AmountCents: 12000})}},
	{"Order", "order-5", []projection.Event{event(14, "OrderPlaced", OrderPlaced{CustomerID: "user-5", AmountCents: 750})}},
	{"Order", "order-6", []projection.Event{event(15, "OrderPlaced", OrderPlaced{CustomerID: "user-2", AmountCents: 2599})}},
}

// Totals of the demo events, for checking read models.
const (
	// UserEvents is how many User events Seed appends.
	UserEvents = 6
	// Users is how many users Seed creates, and ActiveUsers how many of
	// them stay active.
	Users, ActiveUsers = 5, 4
	// OrderEvents is how many Order events (all OrderPlaced) Seed appends.
	OrderEvents = 6
	// RevenueCents is the sum of their amounts.
	RevenueCents = 1250 + 4999 + 300 + 12000 + 750 + 2599
	// Events is how many events Seed appends in all.
	Events = UserEvents + OrderEvents
)

// SeedUsers appends the demo users' events; see [Seed].
func SeedUsers(ctx context.Context, pool *pgxpool.Pool, store *projection.Store) (appended int, err error) {
	return seed(ctx, pool, store, users)
}

// SeedOrders appends the demo orders' events; see [Seed].
func SeedOrders(ctx context.Context, pool *pgxpool.Pool, store *projection.Store) (appended int, err error) {
	return seed(ctx, pool, store, orders)
}

// Seed appends the demo users' and orders' events and returns how many it
// appended. Each aggregate's events are appended with [projection.NoStream],
// so running an example again (or several processes at once) appends each
// stream only once: the losers get a [*projection.ConcurrencyError], which
// here means "already there".
func Seed(ctx context.Context, pool *pgxpool.Pool, store *projection.Store) (appended int, err error) {
	return seed(ctx, pool, store, append(append([]stream(nil), users...), orders...))
}

func seed(ctx context.Context, pool *pgxpool.Pool, store *projection.Store, streams []stream) (int, error) {
	n := 0
	for _, s := range streams {
		out, err := store.Append(ctx, pool, s.aggregateType, s.aggregateID, projection.NoStream, s.events...)
		if errors.Is(err, projection.ErrConcurrencyConflict) {
			continue // appended by an earlier run
		}
		if err != nil {
			return n, fmt.Errorf("appending %s %s: %w", s.aggregateType, s.aggregateID, err)
		}
		n += len(out)
	}
	return n, nil
}

// CountEvents returns how many events of the given aggregate types (all
// types when none is given) the log holds.
func CountEvents(ctx context.Context, db projection.DBTX, aggregateTypes ...string) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT count(*) FROM events WHERE coalesce(cardinality($1::text[]), 0) = 0 OR aggregate_type = ANY($1)`,
		aggregateTypes).Scan(&n)
	return n, err
}

// Processed returns how many events each named projection has handled,
// over all its partitions and topology generations.
func Processed(ctx context.Context, db projection.DBTX, names ...string) (map[string]int64, error) {
	got := map[string]int64{}
	for _, name := range names {
		n, err := projection.EventsProcessed(ctx, db, name)
		if err != nil {
			return nil, err
		}
		got[name] = n
	}
	return got, nil
}

// RunUntilProcessed calls run (which should run projections until its
// context is cancelled, like runner.RunMultipleProjections) and cancels it
// once every projection named in want has handled at least that many events,
// as recorded in its checkpoints. It returns run's error, or ctx's if ctx
// ends first.
//
// A long-running service has no use for this: it runs the runner until
// shutdown. Examples and tests want to stop once the read models are
// complete.
func RunUntilProcessed(ctx context.Context, pool *pgxpool.Pool, want map[string]int64, run func(context.Context) error) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(runCtx) }()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := Processed(runCtx, pool, slices.Collect(maps.Keys(want))...)
		if err == nil && caughtUp(got, want) {
			cancel()
			return <-done
		}
		if err != nil && runCtx.Err() == nil {
			cancel()
			<-done //nolint:errcheck // the runner's error after a cancel is the cancel
			return fmt.Errorf("reading checkpoints: %w", err)
		}
		select {
		case err := <-done:
			// run stopped on its own: it failed, or ctx ended.
			if err == nil {
				err = ctx.Err()
			}
			if err == nil {
				err = errors.New("projections stopped before catching up")
			}
			return err
		case <-tick.C:
		}
	}
}

func caughtUp(got, want map[string]int64) bool {
	for name, n := range want {
		if got[name] < n {
			return false
		}
	}
	return true
}
