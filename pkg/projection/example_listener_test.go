package projection_test

import (
	"context"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// seen counts the events it handles.
type seen struct {
	name string
	n    *atomic.Int64
}

func (s seen) Name() string { return s.name }
func (s seen) Handle(context.Context, pgx.Tx, *projection.PersistedEvent) error {
	s.n.Add(1)
	return nil
}

// Two processors of one process, opted in to wakeups, share one Listener, so they hold one
// listening connection between them. Each handles an append as soon as
// it commits, although both poll only once a minute.
func ExampleNewListener() {
	ctx := context.Background()
	pool := examplePool() // pgxpool.New(ctx, os.Getenv("DATABASE_URL")), then projection.Migrate
	defer pool.Close()
	// Once, by a DBA: the database notifies appends only where
	// projectionist.wakeups is on (off by default: notifying commits
	// cost concurrent writers their group commit). Sessions opened
	// before the ALTER do not see it, hence the Reset.
	var db string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET projectionist.wakeups = on"); err != nil {
		log.Fatal(err)
	}
	pool.Reset()

	runCtx, stop := context.WithCancel(ctx)
	defer stop() // before pool.Close: the processors stop first
	listener := projection.NewListener(pool, nil)
	var orders, emails atomic.Int64
	for _, proj := range []seen{{"orders", &orders}, {"emails", &emails}} {
		cfg := projection.DefaultProcessorConfig()
		cfg.Wakeups, cfg.Listener = projection.WakeupsListen, listener
		cfg.PollInterval, cfg.WakeupPollInterval = time.Minute, time.Minute
		go func() { _ = projection.NewProcessor(pool, nil, cfg).Run(runCtx, proj) }()
	}
	for !listener.Stats().Connected {
		time.Sleep(time.Millisecond) // an Example has no testing.T to wait with: it polls
	}

	if _, err := projection.NewStore().Append(ctx, pool, "Order", "o-1", projection.NoStream,
		projection.Event{EventType: "OrderPlaced"}); err != nil {
		log.Fatal(err)
	}
	for orders.Load() < 1 || emails.Load() < 1 {
		time.Sleep(time.Millisecond) // polls, as above
	}
	fmt.Println("handled by orders:", orders.Load(), "emails:", emails.Load())
	// Output:
	// handled by orders: 1 emails: 1
}
