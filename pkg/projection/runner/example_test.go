package runner_test

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
	"github.com/projectionist/projectionist/pkg/projection/runner"
)

// UserEmailProjection keeps each user's email in user_emails.
type UserEmailProjection struct{}

func (UserEmailProjection) Name() string { return "user_emails" }

func (UserEmailProjection) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if e.EventType != "UserCreated" {
		return nil
	}
	var user struct {
		Email string `json:"email"`
	}
	if err := json.Unmarshal(e.Payload, &user); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO user_emails (user_id, email) VALUES ($1, $2)`, e.AggregateID, user.Email)
	return err
}

// EventCountProjection counts all events in event_count.
type EventCountProjection struct{}

func (EventCountProjection) Name() string { return "event_count" }

func (EventCountProjection) Handle(ctx context.Context, tx pgx.Tx, _ *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, `UPDATE event_count SET n = n + 1`)
	return err
}

func ExampleRunMultipleProjections() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.MustDatabase()) // e.g. os.Getenv("DATABASE_URL")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := projection.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	_, err = pool.Exec(ctx, `
		CREATE TABLE IF NOT EXISTS user_emails (user_id text PRIMARY KEY, email text NOT NULL);
		CREATE TABLE IF NOT EXISTS event_count (n bigint NOT NULL);
		INSERT INTO event_count SELECT 0 WHERE NOT EXISTS (SELECT FROM event_count)`)
	if err != nil {
		log.Fatal(err)
	}

	store := projection.NewStore()
	for id, email := range map[string]string{"u1": "ada@example.com", "u2": "grace@example.com"} {
		_, err := store.Append(ctx, pool, "User", id, projection.NoStream,
			projection.Event{EventType: "UserCreated", Payload: []byte(`{"email":"` + email + `"}`)},
			projection.Event{EventType: "UserLoggedIn"})
		if err != nil {
			log.Fatal(err)
		}
	}

	// Each projection has its own checkpoint and processor config.
	bigBatches := projection.DefaultProcessorConfig()
	bigBatches.BatchSize = 1000
	configs := []runner.ProjectionConfig{
		{Projection: UserEmailProjection{}, ProcessorConfig: projection.DefaultProcessorConfig()},
		{Projection: EventCountProjection{}, ProcessorConfig: bigBatches},
	}

	// RunMultipleProjections runs until ctx is cancelled or a projection
	// fails. A service runs it until shutdown; here, cancel once both
	// checkpoints show all 4 events handled.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel()
		for ctx.Err() == nil {
			var done bool
			_ = pool.QueryRow(ctx, `SELECT count(*) = 2 AND min(events_processed) = 4 FROM projection_checkpoints`).Scan(&done)
			if done {
				return
			}
			time.Sleep(10 * time.Millisecond) // an Example has no testing.T to wait with: it polls
		}
	}()
	if err := runner.RunMultipleProjections(ctx, pool, store, configs); err != nil {
		log.Fatal(err)
	}

	var emails []string
	var n int
	ctx = context.Background()
	rows, _ := pool.Query(ctx, `SELECT email FROM user_emails ORDER BY email`)
	if emails, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		log.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT n FROM event_count`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(emails, n)
	// Output: [ada@example.com grace@example.com] 4
}
