package projection_test

import (
	"testing"

	"github.com/projectionist/projectionist/pkg/projection"
)

// GetProgress reports each partition's lag as the events after its
// checkpoint that hash to it: checked against counts computed here from
// the log, before and after catching up, and for a projection that never
// ran.
func TestGetProgress(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	newAppliedTable(t, pool)
	store := projection.NewStore()

	none, err := projection.GetProgress(ctx, pool, "nobody")
	if err != nil {
		t.Fatal(err)
	}
	if none.Topology.Generation != 0 || len(none.Partitions) != 0 || none.HeadPosition != 0 {
		t.Errorf("progress of a projection that never ran on an empty log = %+v, want zero", none)
	}

	if _, err := projection.SetTopology(ctx, pool, "p", 3); err != nil {
		t.Fatal(err)
	}
	appendN(t, pool, store, 40, 5, "User")
	head := queryInt(t, pool, "SELECT max(global_position) FROM events")

	got, err := projection.GetProgress(ctx, pool, "p")
	if err != nil {
		t.Fatal(err)
	}
	if got.Topology.TotalPartitions != 3 || got.Topology.Generation != 1 || int(got.HeadPosition) != head {
		t.Errorf("topology %+v head %d, want 3 partitions, generation 1, head %d", got.Topology, got.HeadPosition, head)
	}
	if len(got.Partitions) != 3 {
		t.Fatalf("got %d partitions, want 3: %+v", len(got.Partitions), got.Partitions)
	}
	var total int64
	for k, pp := range got.Partitions {
		want := queryInt(t, pool, "SELECT count(*) FROM events WHERE partition_hash % 3 = $1", k)
		if pp.PartitionKey != k || int(pp.Lag) != want {
			t.Errorf("partition %d: key %d lag %d, want lag %d", k, pp.PartitionKey, pp.Lag, want)
		}
		if pp.OldestUnprocessed.IsZero() || pp.Position != 0 {
			t.Errorf("partition %d before any batch: oldest %v position %d, want an oldest time and position 0", k, pp.OldestUnprocessed, pp.Position)
		}
		total += pp.Lag
	}
	if got.Lag != total || total != 200 {
		t.Errorf("total lag %d, partitions sum to %d, want 200", got.Lag, total)
	}

	// Partition 1 catches up; the others have not moved.
	cfg := projection.DefaultProcessorConfig()
	cfg.PartitionKey, cfg.TotalPartitions = 1, 3
	if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "p", key: 1}); err != nil {
		t.Fatal(err)
	}
	got, err = projection.GetProgress(ctx, pool, "p")
	if err != nil {
		t.Fatal(err)
	}
	if p1 := got.Partitions[1]; p1.Lag != 0 || !p1.OldestUnprocessed.IsZero() || int(p1.Position) != head {
		t.Errorf("caught-up partition 1: %+v, want lag 0, no oldest, position %d", p1, head)
	}
	rest := queryInt(t, pool, "SELECT count(*) FROM events WHERE partition_hash % 3 <> 1")
	if int(got.Lag) != rest {
		t.Errorf("total lag %d after partition 1 caught up, want %d", got.Lag, rest)
	}
}

// A scoped projection's partition whose last events are out of its scope
// still reaches lag 0: an idle partition records how far it has looked.
func TestProgressOfScopedProjectionReachesZero(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	newAppliedTable(t, pool)
	store := projection.NewStore()
	appendN(t, pool, store, 5, 2, "Order")
	appendN(t, pool, store, 5, 2, "User") // out of scope, after every Order

	p := scoped{applyLog: applyLog{name: "orders"}, types: []string{"Order"}}
	if err := projection.NewProcessor(pool, store, projection.DefaultProcessorConfig()).CatchUp(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := projection.GetProgress(ctx, pool, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if got.Lag != 0 || len(got.Partitions) != 1 {
		t.Errorf("scoped projection after CatchUp: lag %d partitions %+v, want lag 0 and one partition", got.Lag, got.Partitions)
	}
}
