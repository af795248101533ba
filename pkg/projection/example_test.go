package projection_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// UserCountProjection keeps one row per user in user_stats.
type UserCountProjection struct{}

// Name identifies the projection's checkpoint.
func (UserCountProjection) Name() string { return "user_count" }

// Handle writes through tx, the batch's transaction: the read model and the
// checkpoint commit together, so each event is applied exactly once.
func (UserCountProjection) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	switch e.EventType {
	case "UserCreated":
		var user struct {
			Email string `json:"email"`
		}
		if err := json.Unmarshal(e.Payload, &user); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO user_stats (user_id, email) VALUES ($1, $2)
			ON CONFLICT (user_id) DO NOTHING`, e.AggregateID, user.Email)
		return err
	case "UserDeactivated":
		_, err := tx.Exec(ctx, `UPDATE user_stats SET active = false WHERE user_id = $1`, e.AggregateID)
		return err
	}
	return nil
}

func ExampleNewProcessor() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.MustDatabase()) // e.g. os.Getenv("DATABASE_URL")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := projection.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS user_stats (
		user_id text PRIMARY KEY, email text NOT NULL, active boolean NOT NULL DEFAULT true)`); err != nil {
		log.Fatal(err)
	}

	store := projection.NewStore()
	mustAppend := func(userID string, events ...projection.Event) {
		if _, err := store.Append(ctx, pool, "User", userID, projection.NoStream, events...); err != nil {
			log.Fatal(err)
		}
	}
	mustAppend("u1", projection.Event{EventType: "UserCreated", Payload: []byte(`{"email":"ada@example.com"}`)})
	mustAppend("u2", projection.Event{EventType: "UserCreated", Payload: []byte(`{"email":"grace@example.com"}`)},
		projection.Event{EventType: "UserDeactivated"})

	processor := projection.NewProcessor(pool, store, projection.DefaultProcessorConfig())
	// CatchUp handles the events committed so far and returns. A service
	// calls processor.Run(ctx, UserCountProjection{}) instead, which keeps
	// following the log until ctx is cancelled.
	if err := processor.CatchUp(ctx, UserCountProjection{}); err != nil {
		log.Fatal(err)
	}

	rows, _ := pool.Query(ctx, `SELECT user_id, email, active FROM user_stats ORDER BY user_id`)
	var id, email string
	var active bool
	_, err = pgx.ForEachRow(rows, []any{&id, &email, &active}, func() error {
		fmt.Println(id, email, active)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// u1 ada@example.com true
	// u2 grace@example.com false
}

func ExampleProcessor_RunSupervised() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := examplePool() // pgxpool.New(ctx, os.Getenv("DATABASE_URL")), then projection.Migrate
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS user_stats (
		user_id text PRIMARY KEY, email text NOT NULL, active boolean NOT NULL DEFAULT true)`); err != nil {
		log.Fatal(err)
	}
	store := projection.NewStore()
	if _, err := store.Append(ctx, pool, "User", "u3", projection.NoStream,
		projection.Event{EventType: "UserCreated", Payload: []byte(`{"email":"edsger@example.com"}`)}); err != nil {
		log.Fatal(err)
	}

	// The zero config is the default one. Stop the example once the
	// event is handled; a service runs until it is told to stop.
	var cfg projection.ProcessorConfig
	cfg.OnBatch = func(r projection.BatchResult) {
		if r.Stats.EventsHandled > 0 {
			cancel()
		}
	}
	processor := projection.NewProcessor(pool, store, cfg)
	// RunSupervised rides out lost connections and database restarts
	// with capped exponential backoff; it returns nil once ctx is
	// cancelled, or the *HandlerError of a poison event, or a config
	// error.
	err := processor.RunSupervised(ctx, UserCountProjection{}, projection.SupervisorConfig{
		OnRetry: func(err error, wait time.Duration) { log.Printf("projection down, retrying in %s: %v", wait, err) },
	})
	if err != nil {
		log.Fatal(err)
	}

	var email string
	if err := pool.QueryRow(context.Background(), `SELECT email FROM user_stats WHERE user_id = 'u3'`).Scan(&email); err != nil {
		log.Fatal(err)
	}
	fmt.Println(email)
	// Output:
	// edsger@example.com
}
