package worker_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/worker"
)

// UserCount keeps one row per user in user_stats.
type UserCount struct{}

func (UserCount) Name() string { return "user_count" }

func (UserCount) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	switch e.EventType {
	case "UserCreated":
		_, err := tx.Exec(ctx, "INSERT INTO user_stats (user_id, active) VALUES ($1, true)", e.AggregateID)
		return err
	case "UserDeactivated":
		_, err := tx.Exec(ctx, "UPDATE user_stats SET active = false WHERE user_id = $1", e.AggregateID)
		return err
	}
	return nil
}

// A worker image of your own is this main function around your
// projections, built into a binary. Configure it with DATABASE_URL,
// PROJECTION, PARTITION_KEY or POD_NAME, TOTAL_PARTITIONS, ... or the
// matching flags (-h lists them); it serves /healthz, /readyz and
// /metrics on :8080 and stops gracefully on SIGTERM.
func ExampleMain() {
	// package main
	//
	// func main() { worker.Main(UserCount{}) }
	worker.Main(UserCount{})
}

// A worker program with a setup hook for its read-model tables, a metric
// of its own and a version. The operator runs its image as it runs the
// stock image; PROJECTION selects one of its projections.
func ExampleProgram() {
	// package main
	//
	// var version = "dev" // -ldflags "-X main.version=v1.2.3"
	//
	// func main() { ... }
	seen := prometheus.NewCounter(prometheus.CounterOpts{Name: "shop_user_events_total", Help: "User events seen."})
	worker.Program{
		Projections: []projection.Projection{UserCount{}},
		Setup: func(ctx context.Context, db projection.DBTX) error {
			_, err := db.Exec(ctx, "CREATE TABLE IF NOT EXISTS user_stats (user_id text PRIMARY KEY, active boolean NOT NULL)")
			return err
		},
		Collectors: []prometheus.Collector{seen},
		Version:    "v1.2.3",
	}.Main()
}

func ExampleParseConfig() {
	env := map[string]string{"POD_NAME": "user-count-3", "PROJECTION": "user_count", "BATCH_SIZE": "100"}
	cfg, err := worker.ParseConfig([]string{"--batch-size=500"}, func(name string) string { return env[name] })
	fmt.Println(cfg.PartitionKey, cfg.BatchSize, cfg.Projections, err)

	_, err = worker.ParseConfig(nil, func(name string) string { return map[string]string{"POD_NAME": "web"}[name] })
	fmt.Println(err)
	// Output:
	// 3 500 [user_count] <nil>
	// POD_NAME "web": has no ordinal suffix (as in "user-count-3"); set PARTITION_KEY
}

func ExampleRedactDSN() {
	fmt.Println(worker.RedactDSN("postgres://app:s3cret@db:5432/events"))
	fmt.Println(worker.RedactDSN("host=db user=app password=s3cret"))
	// Output:
	// postgres://app:xxxxx@db:5432/events
	// host=db user=app password=xxxxx
}
