package projection_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// batchApplyLog is applyLog as a BatchProjection: one INSERT per batch,
// in the events' order (seq follows it), so a frontier-skipped event that
// reached HandleBatch would violate applied's primary key.
type batchApplyLog struct {
	applyLog
	mu sync.Mutex
	// calls and largest count HandleBatch calls and the longest slice.
	calls, largest int
}

const insertAppliedBatchSQL = `
	INSERT INTO applied (event_id, projection, partition_key, aggregate_id, aggregate_version)
	SELECT e.id, $1, $2, e.agg, e.version
	FROM unnest($3::uuid[], $4::text[], $5::bigint[]) WITH ORDINALITY AS e(id, agg, version, ord)
	ORDER BY e.ord`

func (a *batchApplyLog) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	a.mu.Lock()
	a.calls++
	a.largest = max(a.largest, len(events))
	a.mu.Unlock()
	ids := make([]uuid.UUID, len(events))
	aggs := make([]string, len(events))
	versions := make([]int64, len(events))
	for i := range events {
		ids[i], aggs[i], versions[i] = events[i].EventID, events[i].AggregateID, events[i].AggregateVersion
	}
	if _, err := tx.Exec(ctx, insertAppliedBatchSQL, a.name, a.key, ids, aggs, versions); err != nil {
		return err
	}
	// Fail after writing, so the failed batch's writes must be undone.
	for i := range events {
		if a.failOn != "" && events[i].EventType == a.failOn {
			return errors.New("bad payload")
		}
	}
	return nil
}

// A batch handler under each error policy, with poison events in the
// middle of batches (and two in a row): each policy applies to exactly
// those events, every other event is applied once, dead letters name
// exactly the poison events, and the checkpoint ends where it should.
func TestBatchHandlerErrorPolicies(t *testing.T) {
	for _, policy := range []projection.ErrorPolicy{projection.ErrorPolicyStop, projection.ErrorPolicySkip, projection.ErrorPolicyDeadLetter} {
		t.Run(policy.String(), func(t *testing.T) {
			ctx := t.Context()
			pool, store := newStore(t, newAppliedTable)
			all, poison := appendPoisoned(t, pool, store, 30, 13, 17, 18)
			var handled, poisoned int
			cfg := projection.DefaultProcessorConfig()
			cfg.BatchSize, cfg.ErrorPolicy = 10, policy
			cfg.OnBatch = func(r projection.BatchResult) { handled += r.Handled; poisoned += r.Poisoned }
			proj := &batchApplyLog{applyLog: applyLog{name: "batch-policy", failOn: "Poison"}}
			err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, proj)

			wantApplied, wantDead, wantPoisoned := 27, 0, 3
			wantCheckpoint := all[len(all)-1].GlobalPosition
			if policy == projection.ErrorPolicyStop {
				// Stopped at the first poison event, the 14th: the
				// first batch committed, the second rolled back.
				var he *projection.HandlerError
				if !errors.As(err, &he) || he.EventID != poison[0].EventID || he.Position != poison[0].Position() || he.Err.Error() != "bad payload" {
					t.Fatalf("CatchUp = %v, want a HandlerError naming event %d", err, poison[0].GlobalPosition)
				}
				wantApplied, wantPoisoned, wantCheckpoint = 10, 0, all[9].GlobalPosition
			} else if err != nil {
				t.Fatalf("CatchUp = %v", err)
			}
			if policy == projection.ErrorPolicyDeadLetter {
				wantDead = 3
			}
			if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != wantApplied {
				t.Errorf("applied %d events, want %d", n, wantApplied)
			}
			for _, p := range poison {
				if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE event_id = $1", p.EventID); n != 0 {
					t.Errorf("the write of poison event %d survived", p.GlobalPosition)
				}
				if n := queryInt(t, pool, "SELECT count(*) FROM projection_dead_letters WHERE event_id = $1 AND global_position = $2 AND error = 'bad payload'",
					p.EventID, p.GlobalPosition); wantDead > 0 && n != 1 {
					t.Errorf("poison event %d has %d dead letters, want 1", p.GlobalPosition, n)
				}
			}
			if n := queryInt(t, pool, "SELECT count(*) FROM projection_dead_letters"); n != wantDead {
				t.Errorf("%d dead letters, want %d", n, wantDead)
			}
			if n := queryInt(t, pool, "SELECT last_global_position FROM projection_checkpoints WHERE projection_name = 'batch-policy'"); int64(n) != wantCheckpoint {
				t.Errorf("checkpoint at %d, want %d", n, wantCheckpoint)
			}
			if n := queryInt(t, pool, "SELECT events_processed FROM projection_checkpoints WHERE projection_name = 'batch-policy'"); n != wantApplied {
				t.Errorf("checkpoint counts %d events, want %d", n, wantApplied)
			}
			if handled != wantApplied || poisoned != wantPoisoned {
				t.Errorf("OnBatch saw %d handled and %d poisoned, want %d and %d", handled, poisoned, wantApplied, wantPoisoned)
			}
			if proj.largest != 10 {
				t.Errorf("largest HandleBatch call had %d events, want the whole batch of 10", proj.largest)
			}
		})
	}
}

// A batch that fails as a whole but in no single event is not poison:
// it commits as applied one event at a time, and the next batches go
// whole again.
func TestBatchHandlerFailureNoEventReproduces(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	appendN(t, pool, store, 1, 25, "A")
	cfg := projection.DefaultProcessorConfig()
	cfg.BatchSize, cfg.ErrorPolicy = 10, projection.ErrorPolicyStop
	proj := &pickyBatch{batchApplyLog: batchApplyLog{applyLog: applyLog{name: "picky"}}}
	if err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, proj); err != nil {
		t.Fatalf("CatchUp = %v", err)
	}
	assertExactlyOnceInOrder(t, pool, "picky")
	// Batch 1 fails whole, is isolated (10 calls), batch 2 goes whole, and
	// so does the short batch 3.
	if proj.calls != 1+10+1+1 {
		t.Errorf("HandleBatch called %d times, want 13", proj.calls)
	}
}

// pickyBatch fails its first whole batch and nothing else.
type pickyBatch struct {
	batchApplyLog
	failed bool
}

func (p *pickyBatch) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	if err := p.batchApplyLog.HandleBatch(ctx, tx, events); err != nil {
		return err
	}
	if len(events) > 1 && !p.failed {
		p.failed = true
		return errors.New("the batch as a whole is refused")
	}
	return nil
}
