package projection

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/pgtest"
)

// scanCostEvents is the log BenchmarkPartitionScanCost reads: one
// transaction per 1000 events, 1000 aggregates.
const scanCostEvents = 100_000

// BenchmarkPartitionScanCost measures what one partition's reads cost the
// database as the partition count N grows over the same log: partition 0
// reads the whole log in batches of 1000 with the processor's own
// statement (eventQuery), each under EXPLAIN ANALYZE, and the benchmark
// reports the index entries PostgreSQL examined per event the partition
// fetched (examined/fetched: 1 when a partition reads only its own rows)
// and the time per fetched event. The ordered index scan on
// (transaction_id, global_position) filters partition_hash % N, so it
// examines about N entries per row it returns: the database's work for all
// N partitions together grows with N times the log. Through the partition
// index for N (read=index) it examines only its own rows.
//
//	go test ./pkg/projection -run '^$' -bench PartitionScanCost -benchtime 1x -count 3
func BenchmarkPartitionScanCost(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.NewPool(b)
	if _, err := Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	for tx := range scanCostEvents / 1000 {
		// The hash trigger fills partition_hash, as for any plain INSERT.
		if _, err := pool.Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
			SELECT 'Account', 'acct-' || i, $1::bigint, gen_random_uuid(), 'Entered', '{}' FROM generate_series(0, 999) AS i`, tx+1); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) events"); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 4, 16, 64, 256} {
		reads := []string{"filter"}
		if n >= MinPartitionIndexPartitions {
			reads = append(reads, "index")
		}
		for _, read := range reads {
			if read == "index" {
				if _, err := CreatePartitionIndex(ctx, pool, n); err != nil {
					b.Fatal(err)
				}
			}
			b.Run(fmt.Sprintf("partitions=%d/read=%s", n, read), func(b *testing.B) {
				var examined, fetched int64
				for b.Loop() {
					examined, fetched = scanPartition(b, pool, n, read == "index")
				}
				b.ReportMetric(float64(examined)/float64(fetched), "examined/fetched")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(fetched), "ns/fetched")
				b.ReportMetric(float64(fetched), "fetched/op")
			})
			if read == "index" {
				if err := DropPartitionIndex(ctx, pool, n); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// scanPartition reads the log as partition 0 of n does, through the
// partition index for n or the filter, and returns the rows examined and
// the events fetched, summed over its batches.
func scanPartition(b *testing.B, pool *pgxpool.Pool, n int, partitionIndex bool) (examined, fetched int64) {
	ctx := context.Background()
	var after Position
	for {
		q := eventQuery{after: after, partitionKey: 0, totalPartitions: n, partitionIndex: partitionIndex, limit: 1000}
		sql, args := q.build()
		var plan []struct {
			Plan explainNode `json:"Plan"`
		}
		var raw []byte
		if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
			b.Fatalf("EXPLAIN output %s: %v", raw, err)
		}
		// The planner may leave the ordered index scan for a sort near the
		// end of the log: count what any scan of events examined.
		scans := plan[0].Plan.scansOf("events", nil)
		if len(scans) == 0 {
			b.Fatalf("partitions=%d: no scan of events in the batch's plan %s", n, raw)
		}
		for _, sc := range scans {
			examined += sc.ActualRows + sc.RemovedByFilter + sc.RemovedByRecheck
		}
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			b.Fatal(err)
		}
		var s eventScanner
		events, err := s.collect(rows, nil)
		if err != nil {
			b.Fatal(err)
		}
		fetched += int64(len(events))
		if len(events) < q.limit {
			return examined, fetched
		}
		last := events[len(events)-1]
		after = Position{TransactionID: last.TransactionID, GlobalPosition: last.GlobalPosition}
	}
}

// explainNode is the part of an EXPLAIN (FORMAT JSON) node the benchmark
// reads.
type explainNode struct {
	NodeType         string        `json:"Node Type"`
	RelationName     string        `json:"Relation Name"`
	ActualRows       int64         `json:"Actual Rows"`
	ActualLoops      int64         `json:"Actual Loops"`
	RemovedByFilter  int64         `json:"Rows Removed by Filter"`
	RemovedByRecheck int64         `json:"Rows Removed by Index Recheck"`
	Plans            []explainNode `json:"Plans"`
}

// scansOf appends the nodes that read relation's rows (an index scan, a
// bitmap heap scan or a sequential scan; not a bitmap index scan, which
// returns no rows of its own) to into.
func (n *explainNode) scansOf(relation string, into []*explainNode) []*explainNode {
	if n.RelationName == relation {
		into = append(into, n)
	}
	for i := range n.Plans {
		into = n.Plans[i].scansOf(relation, into)
	}
	return into
}
