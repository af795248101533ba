package projection_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// halfWriter writes its row first and then fails on poison events, so a
// policy that sets the event aside must also undo that write.
type halfWriter struct {
	applyLog
	failWith error
	mu       sync.Mutex
	infos    []projection.BatchInfo
}

func (h *halfWriter) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if info, ok := projection.BatchInfoFromContext(ctx); ok {
		h.mu.Lock()
		h.infos = append(h.infos, info)
		h.mu.Unlock()
	}
	if err := h.applyLog.Handle(ctx, tx, e); err != nil {
		return err
	}
	if e.EventType == "Poison" {
		return h.failWith
	}
	return nil
}

// appendPoisoned appends n events to aggregate A/a, of type "Poison" at
// the indexes poisonAt and "Fine" elsewhere; it returns them all, and the
// poison ones.
func appendPoisoned(t *testing.T, pool *pgxpool.Pool, store *projection.Store, n int, poisonAt ...int) (all, poison []projection.PersistedEvent) {
	t.Helper()
	for i := range n {
		typ := "Fine"
		if slices.Contains(poisonAt, i) {
			typ = "Poison"
		}
		evs, err := store.Append(t.Context(), pool, "A", "a", projection.AnyVersion, ev(typ))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, evs[0])
		if typ == "Poison" {
			poison = append(poison, evs[0])
		}
	}
	return all, poison
}

func TestErrorPolicies(t *testing.T) {
	for _, policy := range []projection.ErrorPolicy{projection.ErrorPolicySkip, projection.ErrorPolicyDeadLetter} {
		t.Run(policy.String(), func(t *testing.T) {
			ctx := t.Context()
			pool, store := newStore(t, newAppliedTable)
			_, poison := appendPoisoned(t, pool, store, 30, 3, 17, 18)

			var results []projection.BatchResult
			cfg := projection.DefaultProcessorConfig()
			cfg.BatchSize, cfg.ErrorPolicy = 10, policy
			cfg.OnBatch = func(r projection.BatchResult) { results = append(results, r) }
			proj := &halfWriter{applyLog: applyLog{name: "policy"}, failWith: errors.New("bad payload")}
			proc := projection.NewProcessor(pool, store, cfg)
			if err := proc.CatchUp(ctx, proj); err != nil {
				t.Fatalf("CatchUp under %s = %v", policy, err)
			}

			if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 27 {
				t.Fatalf("applied %d events, want the 27 good ones", n)
			}
			for _, p := range poison {
				if n := queryInt(t, pool, "SELECT count(*) FROM applied WHERE event_id = $1", p.EventID); n != 0 {
					t.Errorf("the write of poison event %d survived", p.GlobalPosition)
				}
			}
			st := proc.Stats()
			if st.EventsPoisoned != 3 || st.EventsHandled != 27 {
				t.Errorf("stats = %+v, want 3 poisoned and 27 handled", st)
			}
			dead := queryInt(t, pool, "SELECT count(*) FROM projection_dead_letters WHERE projection_name = 'policy' AND error = 'bad payload' AND event_type = 'Poison'")
			wantDead := 0
			if policy == projection.ErrorPolicyDeadLetter {
				wantDead = 3
			}
			if dead != wantDead {
				t.Errorf("%d dead letters, want %d", dead, wantDead)
			}
			var poisoned, handled int
			for _, r := range results {
				poisoned += r.Poisoned
				handled += r.Handled
				if r.Duration <= 0 {
					t.Errorf("OnBatch got a batch of duration %v", r.Duration)
				}
			}
			if poisoned != 3 || handled != 27 {
				t.Errorf("OnBatch saw %d poisoned and %d handled, want 3 and 27", poisoned, handled)
			}
			if len(proj.infos) == 0 || proj.infos[0] != (projection.BatchInfo{Projection: "policy", PartitionKey: 0, TotalPartitions: 1, Generation: 1}) {
				t.Errorf("BatchInfo in Handle = %+v", proj.infos[:min(1, len(proj.infos))])
			}
		})
	}
}

// An error that says the database, not the event, is the problem is never
// set aside: the processor stops and nothing is skipped.
func TestTransientErrorIsNotPoison(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)
	if _, err := store.Append(ctx, pool, "A", "a", projection.NoStream, ev("Fine"), ev("Poison")); err != nil {
		t.Fatal(err)
	}
	cfg := projection.DefaultProcessorConfig()
	cfg.ErrorPolicy = projection.ErrorPolicySkip
	serialization := &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
	err := projection.NewProcessor(pool, store, cfg).CatchUp(ctx, &halfWriter{applyLog: applyLog{name: "transient"}, failWith: serialization})
	var he *projection.HandlerError
	if err == nil || errors.As(err, &he) || !strings.Contains(err.Error(), "could not serialize") || !strings.Contains(err.Error(), "(Poison) at position 2") {
		t.Fatalf("CatchUp = %v, want the serialization failure naming the event, not a HandlerError and not a skip", err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != 0 {
		t.Fatalf("%d rows committed from the failed batch", n)
	}
}

func TestParseErrorPolicy(t *testing.T) {
	for _, s := range []string{"stop", "skip", "dead-letter"} {
		p, err := projection.ParseErrorPolicy(s)
		if err != nil || p.String() != s {
			t.Errorf("ParseErrorPolicy(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := projection.ParseErrorPolicy("ignore"); !errors.Is(err, projection.ErrInvalidConfig) ||
		!strings.Contains(err.Error(), `error policy "ignore": must be stop, skip or dead-letter`) {
		t.Errorf("ParseErrorPolicy(ignore) = %v", err)
	}
}
