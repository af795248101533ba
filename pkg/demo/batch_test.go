package demo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

var (
	_ projection.BatchProjection = (*demo.UserCountProjection)(nil)
	_ projection.BatchProjection = (*demo.RevenueProjection)(nil)
	_ projection.BatchProjection = (*demo.ActivityLogProjection)(nil)
)

// perEvent hides a projection's HandleBatch, so the processor applies its
// events one by one through Handle, with the same scope.
type perEvent struct{ projection.Projection }

func (p perEvent) AggregateTypes() []string {
	if s, ok := p.Projection.(projection.ScopedProjection); ok {
		return s.AggregateTypes()
	}
	return nil
}

func (p perEvent) BoundedContexts() []string {
	if s, ok := p.Projection.(projection.ScopedProjection); ok {
		return s.BoundedContexts()
	}
	return nil
}

// readModels selects each demo read model whole, in a fixed order, with
// every column but activity_log's applied_at (a clock reading) and seq,
// whose gaps depend on how many numbers failed inserts took: its order
// is what counts.
var readModels = map[string]string{
	"user_count": `SELECT user_id, email, created_at, active FROM user_stats ORDER BY user_id`,
	"revenue":    `SELECT partition_key, orders, total_cents FROM revenue ORDER BY partition_key`,
	"activity_log": `SELECT event_id, row_number() OVER (ORDER BY seq) AS applied, global_position, aggregate_type, aggregate_id, aggregate_version,
		event_type, created_at, partition_key, total_partitions, generation FROM activity_log ORDER BY seq`,
}

var readModelTables = map[string]string{"user_count": "user_stats", "revenue": "revenue", "activity_log": "activity_log"}

// outcome is what a run of a projection leaves: its read model, its dead
// letters, its checkpoints, and the poison events that stopped partitions.
type outcome struct {
	ReadModel   []map[string]any
	DeadLetters []map[string]any
	Checkpoints []map[string]any
	Stopped     []string
}

func selectAll(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) []map[string]any {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return all
}

// runFromScratch empties proj's read model, resets its checkpoints,
// topology and dead letters, calls prepare, and runs every partition of
// an n-partition topology once over the whole log, in batches of 50 under
// policy.
func runFromScratch(t *testing.T, pool *pgxpool.Pool, proj projection.Projection, n int, policy projection.ErrorPolicy, prepare func()) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := proj.Name()
	if err := projection.ResetProjection(ctx, pool, name); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "TRUNCATE "+pgx.Identifier{readModelTables[name]}.Sanitize()+" RESTART IDENTITY"); err != nil {
		t.Fatal(err)
	}
	prepare()
	var out outcome
	for key := range n {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions, cfg.BatchSize, cfg.ErrorPolicy = key, n, 50, policy
		err := projection.NewProcessor(pool, nil, cfg).CatchUp(ctx, proj)
		var herr *projection.HandlerError
		switch {
		case errors.As(err, &herr) && policy == projection.ErrorPolicyStop:
			out.Stopped = append(out.Stopped, fmt.Sprintf("partition %d at %d (%s %s): %v", herr.PartitionKey, herr.Position.GlobalPosition, herr.EventID, herr.EventType, herr.Err))
		case err != nil:
			t.Fatalf("partition %d of %d: %v", key, n, err)
		}
	}
	out.ReadModel = selectAll(t, pool, readModels[name])
	out.DeadLetters = selectAll(t, pool, `SELECT event_id, partition_key, global_position, aggregate_type, aggregate_id, event_type, error
		FROM projection_dead_letters WHERE projection_name = $1 ORDER BY global_position`, name)
	// Not the checkpoints' positions: a caught-up partition's checkpoint
	// moves to the horizon, which moves with every transaction.
	out.Checkpoints = selectAll(t, pool, `SELECT partition_key, events_processed FROM projection_checkpoints WHERE projection_name = $1 ORDER BY partition_key`, name)
	return out
}

// Each demo projection's HandleBatch leaves exactly the read model its
// Handle leaves, event by event: the same rows, the same activity_log
// order, under every error policy, with a poison event of each demo error
// path in the log (a UserCreated and an OrderPlaced whose payloads do not
// decode, an event whose activity_log row is already there), and the same
// dead letters, checkpoints and stopping event.
func TestBatchHandlersMatchPerEvent(t *testing.T) {
	ctx := context.Background()
	pool := migrated(t)
	store := projection.NewStore()
	if _, err := demo.Seed(ctx, pool, store); err != nil {
		t.Fatal(err)
	}
	// Deactivations the batch form must place right: a user created and
	// deactivated in one batch, and one deactivated many batches after it
	// was created.
	appendUser := func(id string, expected projection.ExpectedVersion, types ...string) {
		t.Helper()
		var evs []projection.Event
		for _, typ := range types {
			evs = append(evs, projection.Event{EventType: typ, Payload: json.RawMessage(`{"email": "` + id + `@example.com"}`)})
		}
		if _, err := store.Append(ctx, pool, demo.AggregateUser, id, expected, evs...); err != nil {
			t.Fatal(err)
		}
	}
	appendUser("user-late", projection.NoStream, demo.EventUserCreated)
	generate(t, pool, 400, 20)
	appendUser("user-quick", projection.NoStream, demo.EventUserCreated, demo.EventEmailVerified, demo.EventUserDeactivated)
	bad := []struct{ aggType, id, eventType, payload string }{
		{demo.AggregateUser, "user-bad", demo.EventUserCreated, `{"email": 7}`},
		{demo.AggregateOrder, "order-bad", demo.EventOrderPlaced, `{"customer_id": "user-000001", "amount_cents": "lots"}`},
	}
	for _, b := range bad {
		if _, err := store.Append(ctx, pool, b.aggType, b.id, projection.NoStream,
			projection.Event{EventType: b.eventType, Payload: json.RawMessage(b.payload)}); err != nil {
			t.Fatal(err)
		}
	}
	generate(t, pool, 400, 20)
	appendUser("user-late", projection.ExactVersion(1), demo.EventUserDeactivated)
	// activity_log's poison: an event recorded before the run, so that
	// applying it violates the primary key, in the middle of the log.
	var dupID string
	if err := pool.QueryRow(ctx, `SELECT event_id::text FROM events ORDER BY global_position OFFSET 300 LIMIT 1`).Scan(&dupID); err != nil {
		t.Fatal(err)
	}
	recordDuplicate := func() {
		if _, err := pool.Exec(ctx, `INSERT INTO activity_log (event_id, global_position, aggregate_type, aggregate_id,
			aggregate_version, event_type, created_at) SELECT event_id, 0, 'Recorded', 'before', 0, 'Earlier', created_at
			FROM events WHERE event_id = $1`, dupID); err != nil {
			t.Fatal(err)
		}
	}

	for _, p := range demo.Projections() {
		prepare := func() {}
		if p.Name() == "activity_log" {
			prepare = recordDuplicate
		}
		for _, policy := range []projection.ErrorPolicy{projection.ErrorPolicyStop, projection.ErrorPolicySkip, projection.ErrorPolicyDeadLetter} {
			t.Run(p.Name()+"/"+policy.String(), func(t *testing.T) {
				want := runFromScratch(t, pool, perEvent{p}, 3, policy, prepare)
				got := runFromScratch(t, pool, p, 3, policy, prepare)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("HandleBatch against Handle (-per event +batch):\n%s", diff)
				}
				// The poison event is there and did something.
				switch policy {
				case projection.ErrorPolicyStop:
					if len(got.Stopped) != 1 {
						t.Errorf("%d partitions stopped, want 1: %v", len(got.Stopped), got.Stopped)
					}
				case projection.ErrorPolicyDeadLetter:
					if len(got.DeadLetters) != 1 {
						t.Errorf("%d dead letters, want 1: %v", len(got.DeadLetters), got.DeadLetters)
					}
				}
				if len(got.ReadModel) == 0 {
					t.Error("empty read model")
				}
				if p.Name() == "user_count" {
					for _, row := range got.ReadModel {
						if id := row["user_id"]; (id == "user-late" || id == "user-quick") && row["active"] != false {
							t.Errorf("%s is active, want deactivated", id)
						}
					}
				}
			})
		}
	}
}
