package projection_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/projectionist/projectionist/internal/proctest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// runWithClock runs proj under cfg, its Clock set to clk and its polls
// 5ms apart, until the test ends; it returns the processor for its Stats.
func runWithClock(t *testing.T, pool *pgxpool.Pool, store *projection.Store, cfg projection.ProcessorConfig,
	clk *clocktesting.FakePassiveClock, proj projection.Projection) *projection.Processor {
	t.Helper()
	cfg.Clock, cfg.PollInterval = clk, 5*time.Millisecond
	proc := projection.NewProcessor(pool, store, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- proc.Run(ctx, proj) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return proc
}

// morePolls waits until proc has completed n more batches.
func morePolls(t *testing.T, proc *projection.Processor, n int64) {
	t.Helper()
	from := proc.Stats().Batches
	eventually(t, "more polls", func() bool { return proc.Stats().Batches >= from+n })
}

// An idle partition saves how far it has looked at most once a second of
// its Clock: while the clock stands still, polls past events out of its
// scope, for more than a second of wall time, leave the stored checkpoint
// where the last handled event put it; once the clock has moved a second
// on, the next poll saves it.
func TestIdleSaveFollowsClock(t *testing.T) {
	pool, store := newAppliedStore(t, 3, 1, "Order")
	clk := clocktesting.NewFakePassiveClock(time.Now())
	proc := runWithClock(t, pool, store, projection.DefaultProcessorConfig(), clk,
		scoped{applyLog: applyLog{name: "orders"}, types: []string{"Order"}})
	eventually(t, "the orders applied", func() bool { return queryInt(t, pool, "SELECT count(*) FROM applied") == 3 })

	stored := func() int {
		return queryInt(t, pool, "SELECT last_transaction_id::text::bigint FROM projection_checkpoints WHERE projection_name = 'orders'")
	}
	before := stored()
	appendN(t, pool, store, 2, 1, "User") // out of scope
	last := queryInt(t, pool, "SELECT max(transaction_id::text::bigint) FROM events")
	eventually(t, "a poll past the users", func() bool { return int(proc.Stats().Position.TransactionID) > last })
	// Longer than a second of the wall clock, which the processor must
	// not read: a condition on the batches and the wall clock, not a
	// measurement of speed.
	lookedPast, batches := time.Now(), proc.Stats().Batches
	eventually(t, "polls for more than a second", func() bool {
		return time.Since(lookedPast) > 1200*time.Millisecond && proc.Stats().Batches > batches+3
	})
	if got := stored(); got != before {
		t.Fatalf("stored checkpoint moved from transaction %d to %d while the clock stood still", before, got)
	}

	clk.SetTime(clk.Now().Add(time.Second))
	eventually(t, "the checkpoint saved past the users", func() bool { return stored() > last })
}

// A partition looks whether the partition index for its count is valid
// when it starts and then every 30 seconds of its Clock: an index built
// while it runs is not read through while the clock stands still, and is
// from the first poll after the clock moved 30 seconds on.
func TestPartitionIndexCheckFollowsClock(t *testing.T) {
	ctx := t.Context()
	pool, store := newAppliedStore(t, 4, 1, "Order")
	const partitions = projection.MinPartitionIndexPartitions
	if _, err := projection.SetTopology(ctx, pool, "indexed", partitions); err != nil {
		t.Fatal(err)
	}
	var logs proctest.SyncBuffer
	cfg := projection.DefaultProcessorConfig()
	cfg.Topology, cfg.Logger = projection.TopologyFollow, slog.New(slog.NewJSONHandler(&logs, nil))
	clk := clocktesting.NewFakePassiveClock(time.Now())
	proc := runWithClock(t, pool, store, cfg, clk, applyLog{name: "indexed"})
	readsThroughIndex := func() bool {
		for line := range strings.Lines(logs.String()) {
			var rec struct {
				Msg            string `json:"msg"`
				PartitionIndex *bool  `json:"partitionIndex"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if rec.Msg == "projection partition reads" && rec.PartitionIndex != nil && *rec.PartitionIndex {
				return true
			}
		}
		return false
	}
	morePolls(t, proc, 1) // the first batch looked: no index yet

	if built, err := projection.CreatePartitionIndex(ctx, pool, partitions); err != nil || !built {
		t.Fatalf("CreatePartitionIndex = %v, %v", built, err)
	}
	morePolls(t, proc, 3)
	if readsThroughIndex() {
		t.Fatalf("reads through the partition index before the clock moved:\n%s", logs.String())
	}

	clk.SetTime(clk.Now().Add(30 * time.Second))
	// 10s: the next poll (5ms apart) looks; the wall clock's 30s would
	// not be up.
	proctest.Eventually(t, 10*time.Second, 10*time.Millisecond, "reads through the partition index", proctest.True(readsThroughIndex))
}
