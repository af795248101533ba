package projection_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// The expected hashes come from the FNV-1a definition computed outside Go
// (the first three are the published test vectors), so a change to the
// hash or to the int conversion fails here.
func TestHashPartitionStrategyVectors(t *testing.T) {
	tests := []struct {
		id             string
		hash           uint32
		mod2, mod3, m7 int
	}{
		{"", 0x811c9dc5, 1, 1, 2},
		{"a", 0xe40c292c, 0, 1, 5},
		{"foobar", 0xbf9cf968, 0, 1, 0},
		{"user-1", 0xf5537974, 0, 1, 3},
		{"user-42", 0x026073ab, 1, 0, 6},
		{"order-9f8e", 0xc85f2b72, 0, 2, 4},
		{"3f2504e0-4f89-11d3-9a0c-0305e82c3301", 0x5e8d41a0, 0, 1, 5},
		{"ünïcödé", 0x30eaf7d2, 0, 1, 6},
	}
	s := projection.HashPartitionStrategy{}
	for _, tt := range tests {
		if got := projection.PartitionHash(tt.id); got != tt.hash {
			t.Errorf("PartitionHash(%q) = %#08x, want %#08x", tt.id, got, tt.hash)
		}
		for total, want := range map[int]int{1: 0, 2: tt.mod2, 3: tt.mod3, 7: tt.m7} {
			for key := range total {
				if got := s.ShouldProcess(tt.id, key, total); got != (key == want) {
					t.Errorf("ShouldProcess(%q, %d, %d) = %v, want %v", tt.id, key, total, got, key == want)
				}
			}
		}
	}
}

// recorder remembers which aggregate ids it handled. Safe for concurrent use.
type recorder struct {
	name string
	mu   sync.Mutex
	ids  []string
}

func (r *recorder) Name() string { return r.name }
func (r *recorder) Handle(_ context.Context, _ pgx.Tx, e *projection.PersistedEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, e.AggregateID)
	return nil
}

// The SQL filter on the stored hash must select exactly what the Go strategy
// selects, for every partition count the operator is likely to use.
func TestSQLPartitionFilterMatchesGo(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)

	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, 10000)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		ids[i] = fmt.Sprintf("agg-%x", rng.Uint64())
		if _, err := store.Append(ctx, tx, "Thing", ids[i], projection.NoStream, projection.Event{EventType: "Made"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	for total := 1; total <= 16; total++ {
		for key := range total {
			want := map[string]bool{}
			for _, id := range ids {
				if (projection.HashPartitionStrategy{}).ShouldProcess(id, key, total) {
					want[id] = true
				}
			}
			cfg := projection.DefaultProcessorConfig()
			cfg.BatchSize, cfg.PartitionKey, cfg.TotalPartitions = 1000, key, total
			rec := &recorder{name: fmt.Sprintf("filter_%d", total)}
			if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, rec); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, id := range rec.ids {
				if got[id] {
					t.Fatalf("N=%d key=%d: %s handled twice", total, key, id)
				}
				got[id] = true
			}
			if len(got) != len(want) {
				t.Fatalf("N=%d key=%d: SQL filter selected %d aggregates, Go strategy %d", total, key, len(got), len(want))
			}
			for id := range want {
				if !got[id] {
					t.Fatalf("N=%d key=%d: Go strategy selects %s, SQL filter does not", total, key, id)
				}
			}
		}
	}
}
