package importer_test

// The import's throughput: a guide-shaped table of benchEvents events
// (about 100-byte bytea payloads, metadata on every other, 1000
// aggregates) in schema pup of the target database, imported whole into
// projectionist's events table on every iteration (events table and
// checkpoint emptied outside the timer).
//
//	go test ./internal/importer -run '^$' -bench . -benchtime 3x -count 3

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/importer"
	"github.com/projectionist/projectionist/internal/importer/importertest"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const benchEvents = 100_000

// benchSource fills the guide's table in schema pup with %d events.
const benchSource = `
INSERT INTO pup.events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload, trace_id, metadata)
SELECT 'User', 'user-' || (i %% 1000), i / 1000 + 1, gen_random_uuid(), 'UserRenamed',
       convert_to(format('{"user_id": "user-%%s", "name": "name %%s", "email": "user%%s@example.com"}', i %% 1000, i, i), 'UTF8'),
       CASE WHEN i %% 2 = 0 THEN 'trace-' || i END,
       CASE WHEN i %% 2 = 0 THEN '{"source": "bench"}'::jsonb END
FROM generate_series(0, %d - 1) AS i
ORDER BY i;
ANALYZE pup.events;`

func BenchmarkImport(b *testing.B) {
	for _, size := range []int{1000, importer.DefaultBatchSize} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			pool := pgtest.NewPool(b)
			if _, err := projection.Migrate(ctx, pool); err != nil {
				b.Fatal(err)
			}
			if _, err := pool.Exec(ctx, importertest.GuideSchema("pup")+fmt.Sprintf(benchSource, benchEvents)); err != nil {
				b.Fatal(err)
			}
			var elapsed float64
			for b.Loop() {
				b.StopTimer()
				empty(b, pool)
				b.StartTimer()
				p, err := importer.Run(ctx, importer.Config{Source: pool, Target: pool, Table: "pup.events", BatchSize: size})
				if err != nil {
					b.Fatal(err)
				}
				if p.Imported != benchEvents {
					b.Fatalf("imported %d events, want %d", p.Imported, benchEvents)
				}
				elapsed += p.Elapsed.Seconds()
			}
			b.ReportMetric(float64(benchEvents*b.N)/elapsed, "events/s")
		})
	}
}

func empty(b *testing.B, pool *pgxpool.Pool) {
	b.Helper()
	for _, q := range []string{"TRUNCATE events", "DELETE FROM projection_imports", "VACUUM ANALYZE events"} {
		if _, err := pool.Exec(context.Background(), q); err != nil {
			b.Fatal(err)
		}
	}
}
