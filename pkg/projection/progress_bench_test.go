package projection_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

const (
	// progressBenchEvents is the size of BenchmarkGetProgress's log, about
	// that of the log in issue 32 (657k events), where the operator's
	// progress read ran out of its 5 s.
	progressBenchEvents = 650_000
	// progressBenchTxEvents events are appended per transaction.
	progressBenchTxEvents = 10_000
)

// progressSeedSQL appends $2 events from number $1 in one statement: one
// User event in ten, the rest Orders, over 10 000 aggregates of each; the
// partition hash comes from the SQL function (the trigger of migration
// 0005).
const progressSeedSQL = `
INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
SELECT CASE WHEN i % 10 = 0 THEN 'User' ELSE 'Order' END,
       CASE WHEN i % 10 = 0 THEN 'user-' ELSE 'order-' END || (i % 10000),
       i / 10000 + 1, gen_random_uuid(), 'Happened', '{}'
FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS i`

// newProgressBenchLog returns a pool on a fresh database holding
// progressBenchEvents events, vacuumed and analysed.
func newProgressBenchLog(b *testing.B) *pgxpool.Pool {
	b.Helper()
	ctx := context.Background()
	pool := newPool(b)
	for i := 0; i < progressBenchEvents; i += progressBenchTxEvents {
		if _, err := pool.Exec(ctx, progressSeedSQL, i, progressBenchTxEvents); err != nil {
			b.Fatalf("seeding events: %v", err)
		}
	}
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) events"); err != nil {
		b.Fatalf("vacuuming events: %v", err)
	}
	return pool
}

// BenchmarkGetProgress measures the operator's progress read on a log of
// 650 000 events: at the start of a rebuild (every partition at the
// beginning of the log: what issue 32 saw time out), and caught up (every
// partition at the head), with 1 and 4 partitions.
//
//	go test ./pkg/projection/ -run '^$' -bench GetProgress -benchtime 5x -count 3
func BenchmarkGetProgress(b *testing.B) {
	ctx := context.Background()
	pool := newProgressBenchLog(b)
	for _, bc := range []struct {
		name       string
		partitions int
		caughtUp   bool
	}{
		{"rebuild-start-1-partition", 1, false},
		{"rebuild-start-4-partitions", 4, false},
		{"caught-up-4-partitions", 4, true},
	} {
		proj := "bench_progress_" + bc.name
		if _, err := projection.SetTopology(ctx, pool, proj, bc.partitions); err != nil {
			b.Fatal(err)
		}
		if bc.caughtUp {
			if _, err := pool.Exec(ctx, `
				INSERT INTO projection_checkpoints (projection_name, partition_key, total_partitions, generation,
				                                    last_transaction_id, last_global_position)
				SELECT $1, k, $2, 1, pg_snapshot_xmin(pg_current_snapshot()), 0 FROM generate_series(0, $2 - 1) AS k
				ON CONFLICT (projection_name, partition_key) DO UPDATE
				SET last_transaction_id = EXCLUDED.last_transaction_id, last_global_position = 0`, proj, bc.partitions); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(bc.name, func(b *testing.B) {
			var lag int64
			for b.Loop() {
				pr, err := projection.GetProgress(ctx, pool, proj)
				if err != nil {
					b.Fatal(err)
				}
				lag = pr.Lag
			}
			b.ReportMetric(float64(lag), "lag-events")
		})
	}
}
