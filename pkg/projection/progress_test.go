package projection_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// GetProgress reports each partition's lag as the events after its
// checkpoint that hash to it: checked against counts computed here from
// the log, before and after catching up, and for a projection that never
// ran.
func TestGetProgress(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)

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
	pool, store := newStore(t, newAppliedTable)
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

// The projection_lag view (migration 0011, for KEDA's postgresql scaler)
// reports, per partition, the lag GetProgress reports, and the age of the
// oldest event still to pass; checked with 1 and 3 partitions, before and
// after one partition catches up, and the documented KEDA query.
func TestLagViewMatchesGetProgress(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 30, 4, "User")
	if _, err := pool.Exec(ctx, "UPDATE events SET created_at = now() - interval '90 seconds' WHERE global_position = 1"); err != nil {
		t.Fatal(err)
	}
	check := func(name string) {
		t.Helper()
		want, err := projection.GetProgress(ctx, pool, name)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := pool.Query(ctx, `SELECT partition_key, total_partitions, generation, lag_events, oldest_unprocessed_age_seconds
			FROM projection_lag WHERE projection_name = $1 ORDER BY partition_key`, name)
		if err != nil {
			t.Fatal(err)
		}
		var got []projection.PartitionProgress
		var key, total int
		var gen, lag, age int64
		_, err = pgx.ForEachRow(rows, []any{&key, &total, &gen, &lag, &age}, func() error {
			if total != want.Topology.TotalPartitions || gen != want.Topology.Generation {
				t.Errorf("%s: view has %d partitions generation %d, GetProgress %+v", name, total, gen, want.Topology)
			}
			pp := want.Partitions[key]
			switch {
			case pp.OldestUnprocessed.IsZero() && age != 0:
				t.Errorf("%s partition %d: age %d s with nothing to pass", name, key, age)
			case !pp.OldestUnprocessed.IsZero() && (age < int64(want.Now.Sub(pp.OldestUnprocessed).Seconds())-1):
				t.Errorf("%s partition %d: age %d s, oldest event appended %s before", name, key, age, want.Now.Sub(pp.OldestUnprocessed))
			}
			got = append(got, projection.PartitionProgress{PartitionKey: key, Lag: lag})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var wantLags []projection.PartitionProgress
		for _, pp := range want.Partitions {
			wantLags = append(wantLags, projection.PartitionProgress{PartitionKey: pp.PartitionKey, Lag: pp.Lag})
		}
		if diff := cmp.Diff(wantLags, got); diff != "" {
			t.Errorf("%s: projection_lag against GetProgress (-want +got):\n%s", name, diff)
		}
		sum := queryInt(t, pool, "SELECT coalesce(sum(lag_events), 0) FROM projection_lag WHERE projection_name = $1", name)
		if int64(sum) != want.Lag {
			t.Errorf("%s: the KEDA query says %d, GetProgress %d", name, sum, want.Lag)
		}
	}
	for _, n := range []int{1, 3} {
		name := fmt.Sprintf("lag_%d", n)
		if _, err := projection.SetTopology(ctx, pool, name, n); err != nil {
			t.Fatal(err)
		}
		check(name)
		if age := queryInt(t, pool, "SELECT max(oldest_unprocessed_age_seconds) FROM projection_lag WHERE projection_name = $1", name); age < 89 {
			t.Errorf("%s before any batch: the oldest unprocessed event is %d s old, want at least 89 (the first event's age)", name, age)
		}
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions = 0, n
		if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: name, key: 0}); err != nil {
			t.Fatal(err)
		}
		check(name)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM projection_lag WHERE projection_name = 'lag_1' AND lag_events = 0 AND oldest_unprocessed_age_seconds = 0"); n != 1 {
		t.Errorf("lag_1 after catching up: %d rows at lag 0 and age 0, want 1", n)
	}
}

// now() is the reading transaction's start, so a reader that began
// before an appender sees, once the append has committed, an event
// appended "after now": the view's age of it was -1 (floor of a small
// negative interval). It reads 0, as do the Go ages.
func TestLagAgesNeverNegative(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	if _, err := projection.SetTopology(ctx, pool, "ages", 1); err != nil {
		t.Fatal(err)
	}
	reader, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Release()
	tx, err := reader.Begin(ctx) // READ COMMITTED: each statement sees what has committed
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var began time.Time
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&began); err != nil {
		t.Fatal(err)
	}
	appendN(t, pool, store, 1, 1, "User") // on another connection, in a transaction that starts later
	var age, lag int64
	if err := tx.QueryRow(ctx, "SELECT oldest_unprocessed_age_seconds, lag_events FROM projection_lag WHERE projection_name = 'ages'").Scan(&age, &lag); err != nil {
		t.Fatal(err)
	}
	if age != 0 || lag != 1 {
		t.Errorf("projection_lag read in a transaction older than the append: age %d s, lag %d; want 0 and 1", age, lag)
	}
	l, err := projection.GetPartitionLag(ctx, tx, projection.LagQuery{Projection: "ages"})
	if err != nil {
		t.Fatal(err)
	}
	if !l.OldestUnprocessed.After(began) || l.Age() != 0 {
		t.Errorf("GetPartitionLag in that transaction: oldest %s (the reader began %s), age %s; want after it, and 0",
			l.OldestUnprocessed, began, l.Age())
	}
}

// GetPartitionLag measures one partition as GetProgress does, from the
// stored checkpoint or a given position, within a scope, and with the age
// of the oldest event still to pass; a key outside the topology and a
// projection without one have no lag.
func TestGetPartitionLag(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	lag := func(q projection.LagQuery) projection.PartitionLag {
		t.Helper()
		l, err := projection.GetPartitionLag(ctx, pool, q)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	if l := lag(projection.LagQuery{Projection: "nobody"}); l.Events != 0 || l.Age() != 0 || l.Now.IsZero() {
		t.Errorf("lag of a projection without a topology = %+v, want 0 events and a clock", l)
	}
	appendN(t, pool, store, 20, 3, "User")
	appendN(t, pool, store, 10, 2, "Order")
	if _, err := pool.Exec(ctx, "UPDATE events SET created_at = now() - interval '90 seconds' WHERE global_position = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := projection.SetTopology(ctx, pool, "p", 2); err != nil {
		t.Fatal(err)
	}

	progress, err := projection.GetProgress(ctx, pool, "p")
	if err != nil {
		t.Fatal(err)
	}
	for _, pp := range progress.Partitions {
		l := lag(projection.LagQuery{Projection: "p", PartitionKey: pp.PartitionKey})
		if l.Events != pp.Lag || !l.OldestUnprocessed.Equal(pp.OldestUnprocessed) {
			t.Errorf("partition %d: GetPartitionLag %+v, GetProgress %+v", pp.PartitionKey, l, pp)
		}
		want := queryInt(t, pool, "SELECT count(*) FROM events WHERE partition_hash % 2 = $1 AND aggregate_type = 'Order'", pp.PartitionKey)
		if l := lag(projection.LagQuery{Projection: "p", PartitionKey: pp.PartitionKey, AggregateTypes: []string{"Order"}}); int(l.Events) != want {
			t.Errorf("partition %d scoped to Order: %d events, want %d", pp.PartitionKey, l.Events, want)
		}
		if l := lag(projection.LagQuery{Projection: "p", PartitionKey: pp.PartitionKey, BoundedContexts: []string{"elsewhere"}}); l.Events != 0 || l.Age() != 0 {
			t.Errorf("partition %d scoped to an empty bounded context: %+v, want no lag", pp.PartitionKey, l)
		}
	}
	first := queryInt(t, pool, "SELECT partition_hash % 2 FROM events WHERE global_position = 1")
	if age := lag(projection.LagQuery{Projection: "p", PartitionKey: first}).Age(); age < 89*time.Second {
		t.Errorf("partition %d holds an event appended 90 s ago, but its lag's age is %s", first, age)
	}
	if l := lag(projection.LagQuery{Projection: "p", PartitionKey: 2}); l.Events != 0 || l.Age() != 0 {
		t.Errorf("lag of key 2 of 2 partitions = %+v, want none", l)
	}

	// From a position: the last event's leaves nothing behind, and the
	// one before it leaves one event (in its partition) or none.
	var last, before projection.Position
	var lastKey int
	if err := pool.QueryRow(ctx, `SELECT transaction_id::text::bigint, global_position, partition_hash % 2 FROM events
		ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&last.TransactionID, &last.GlobalPosition, &lastKey); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT transaction_id::text::bigint, global_position FROM events
		ORDER BY transaction_id DESC, global_position DESC OFFSET 1 LIMIT 1`).Scan(&before.TransactionID, &before.GlobalPosition); err != nil {
		t.Fatal(err)
	}
	if l := lag(projection.LagQuery{Projection: "p", PartitionKey: lastKey, After: &last}); l.Events != 0 || l.Age() != 0 {
		t.Errorf("lag after the last event = %+v, want none", l)
	}
	if l := lag(projection.LagQuery{Projection: "p", PartitionKey: lastKey, After: &before}); l.Events != 1 || l.Age() < 0 || l.OldestUnprocessed.IsZero() {
		t.Errorf("lag after the last event but one, in the last event's partition = %+v, want 1 event", l)
	}

	// Partition 0 catches up: the stored checkpoint now leaves nothing.
	cfg := projection.DefaultProcessorConfig()
	cfg.PartitionKey, cfg.TotalPartitions = 0, 2
	if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, applyLog{name: "p", key: 0}); err != nil {
		t.Fatal(err)
	}
	if l := lag(projection.LagQuery{Projection: "p", PartitionKey: 0}); l.Events != 0 || l.Age() != 0 {
		t.Errorf("lag of caught-up partition 0 = %+v, want none", l)
	}
}

// A scoped projection's lag counts only the events in its scope, which its
// processor records on its checkpoints (also anew after a topology
// switch): events of other aggregate types appended after it caught up,
// with no processor running, leave its lag at 0 and PassedHead true (issue
// 32: its lag never read 0 under steady appends of other types). PassedHead
// then tells an in-scope event at or below a head from one above it; an
// unscoped projection on the same log counts every event; the
// projection_lag view agrees.
func TestProgressCountsOnlyTheScope(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 10, 2, "User")
	users := scoped{applyLog: applyLog{name: "users"}, types: []string{"User"}}
	catchUp := func(partitions int) {
		t.Helper()
		if _, err := projection.SetTopology(ctx, pool, "users", partitions); err != nil {
			t.Fatal(err)
		}
		for key := range partitions {
			cfg := projection.DefaultProcessorConfig()
			cfg.PartitionKey, cfg.TotalPartitions = key, partitions
			p := users
			p.key = key
			if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(name string) projection.Progress {
		t.Helper()
		pr, err := projection.GetProgress(ctx, pool, name)
		if err != nil {
			t.Fatal(err)
		}
		view := queryInt(t, pool, "SELECT coalesce(sum(lag_events), 0) FROM projection_lag WHERE projection_name = $1", name)
		if int64(view) != pr.Lag {
			t.Errorf("%s: projection_lag sums to %d, GetProgress %d", name, view, pr.Lag)
		}
		return pr
	}

	for _, partitions := range []int{2, 3} { // 3: a switch makes the checkpoints anew
		catchUp(partitions)
		appendN(t, pool, store, 20, 2, "Order") // out of scope; no processor runs
		got := read("users")
		if got.Lag != 0 || !got.OldestUnprocessed.IsZero() || !got.PassedHead(got.HeadPosition) || got.LagAtLeast {
			t.Errorf("%d partitions, Orders appended after the Users were handled: lag %d oldest %v passed head %v, want 0, none, true",
				partitions, got.Lag, got.OldestUnprocessed, got.PassedHead(got.HeadPosition))
		}
		for _, pp := range got.Partitions {
			if pp.LowestPending != 0 {
				t.Errorf("%d partitions: partition %d has lowest pending %d, want 0", partitions, pp.PartitionKey, pp.LowestPending)
			}
		}
	}

	before := read("users").HeadPosition
	appendN(t, pool, store, 1, 1, "User")
	head := int64(queryInt(t, pool, "SELECT max(global_position) FROM events"))
	got := read("users")
	key := queryInt(t, pool, "SELECT partition_hash % 3 FROM events WHERE global_position = $1", head)
	if got.Lag != 1 || got.Partitions[key].Lag != 1 || got.Partitions[key].LowestPending != head {
		t.Errorf("one User appended at %d: lag %d, partition %d %+v, want 1 with lowest pending %d", head, got.Lag, key, got.Partitions[key], head)
	}
	if !got.PassedHead(before) || got.PassedHead(head) {
		t.Errorf("one User appended at %d: passed head %d %v, passed head %d %v, want true, false", head, before, got.PassedHead(before), head, got.PassedHead(head))
	}

	if _, err := projection.SetTopology(ctx, pool, "all", 2); err != nil {
		t.Fatal(err)
	}
	if all := read("all"); all.Lag != head {
		t.Errorf("unscoped projection that never ran: lag %d, want every event, %d", all.Lag, head)
	}
}
