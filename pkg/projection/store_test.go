package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

func ev(typ string) projection.Event { return projection.Event{EventType: typ} }

func countEvents(t *testing.T, db projection.DBTX, where string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM events "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAppendExpectedVersions(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)

	got, err := store.Append(ctx, pool, "User", "u1", projection.NoStream, ev("UserCreated"), ev("EmailVerified"))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].AggregateVersion != 1 || got[1].AggregateVersion != 2 || got[0].GlobalPosition >= got[1].GlobalPosition {
		t.Fatalf("versions/positions = %+v", got)
	}

	conflicts := []struct {
		expected projection.ExpectedVersion
		reason   string
	}{
		{projection.NoStream, "expected no stream, found version 2"},
		{projection.ExactVersion(1), "expected version 1, found 2"},
		{projection.ExactVersion(3), "expected version 3, found 2"},
	}
	for _, c := range conflicts {
		_, err := store.Append(ctx, pool, "User", "u1", c.expected, ev("X"))
		var ce *projection.ConcurrencyError
		if !errors.As(err, &ce) || !errors.Is(err, projection.ErrConcurrencyConflict) {
			t.Fatalf("append at %s: err = %v, want a *ConcurrencyError", c.expected, err)
		}
		if ce.Actual != 2 || ce.Reason != c.reason || ce.AggregateID != "u1" {
			t.Fatalf("append at %s: %+v, want actual 2 and reason %q", c.expected, ce, c.reason)
		}
	}
	if n := countEvents(t, pool, "WHERE aggregate_id = 'u1'"); n != 2 {
		t.Fatalf("events after failed appends = %d, want 2", n)
	}

	if _, err := store.Append(ctx, pool, "User", "u1", projection.ExactVersion(2), ev("UserDeactivated")); err != nil {
		t.Fatal(err)
	}
	got, err = store.Append(ctx, pool, "User", "u1", projection.AnyVersion, ev("UserReactivated"))
	if err != nil || got[0].AggregateVersion != 4 {
		t.Fatalf("append any: %+v, %v; want version 4", got, err)
	}
	// The same id in another aggregate type or bounded context is another stream.
	if _, err := store.Append(ctx, pool, "Order", "u1", projection.NoStream, ev("OrderPlaced")); err != nil {
		t.Fatal(err)
	}
	billing := projection.NewStore(projection.WithBoundedContext("billing"))
	if _, err := billing.Append(ctx, pool, "User", "u1", projection.NoStream, ev("Invoiced")); err != nil {
		t.Fatal(err)
	}
}

func TestAppendStoresWhatWasGiven(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	store := projection.NewStore(projection.WithBoundedContext("identity"))
	id := uuid.New()
	in := projection.Event{EventID: id, EventType: "UserCreated", EventVersion: 2,
		Payload: json.RawMessage(`{"email":"a@example.com"}`), Metadata: json.RawMessage(`{"actor":"admin"}`)}
	out, err := store.Append(ctx, pool, "User", "u-7", projection.NoStream, in)
	if err != nil {
		t.Fatal(err)
	}
	read, err := store.ReadAggregateStream(ctx, pool, "User", "u-7", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != 1 {
		t.Fatalf("read %d events, want 1", len(read))
	}
	r := read[0]
	if r.EventID != id || r.EventType != "UserCreated" || r.EventVersion != 2 || r.BoundedContext != "identity" ||
		r.AggregateType != "User" || r.AggregateID != "u-7" || r.AggregateVersion != 1 || r.TransactionID == 0 {
		t.Fatalf("read back %+v", r)
	}
	var p, m map[string]string
	if err := json.Unmarshal(r.Payload, &p); err != nil || p["email"] != "a@example.com" {
		t.Fatalf("payload %s (%v)", r.Payload, err)
	}
	if err := json.Unmarshal(r.Metadata, &m); err != nil || m["actor"] != "admin" {
		t.Fatalf("metadata %s (%v)", r.Metadata, err)
	}
	// What Append returned is what is stored (timestamps to the microsecond).
	out[0].CreatedAt, r.CreatedAt = out[0].CreatedAt.UTC(), r.CreatedAt.UTC()
	if diff := cmp.Diff(out[0], r, cmp.Comparer(func(a, b json.RawMessage) bool {
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && cmp.Equal(x, y)
	})); diff != "" {
		t.Fatalf("Append's result differs from the stored event (-returned +stored):\n%s", diff)
	}
	var hash int64
	if err := pool.QueryRow(ctx, "SELECT partition_hash FROM events").Scan(&hash); err != nil || hash != int64(projection.PartitionHash("u-7")) {
		t.Fatalf("stored partition_hash = %d (%v), want %d", hash, err, projection.PartitionHash("u-7"))
	}
}

// TestAppendTraceIDs: causation, correlation and trace ids are stored in
// their own columns, NULL when not given, and read back by every reader
// (the aggregate stream and the projection-order log); a plain SQL writer
// sets them by name.
func TestAppendTraceIDs(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	traced := projection.Event{EventType: "OrderPlaced", CausationID: "cmd-42", CorrelationID: "checkout-7",
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
	if _, err := store.Append(ctx, pool, "Order", "o-1", projection.NoStream, traced, ev("OrderPaid")); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload, correlation_id)
		VALUES ('Order', 'o-1', 3, gen_random_uuid(), 'OrderShipped', '{}', 'checkout-7')`); err != nil {
		t.Fatal(err)
	}
	var nulls int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE causation_id IS NULL AND trace_id IS NULL`).Scan(&nulls); err != nil || nulls != 2 {
		t.Fatalf("events with NULL causation and trace ids: %d (%v), want 2 (an id not given is NULL, not '')", nulls, err)
	}
	type ids struct{ Type, Causation, Correlation, Trace string }
	want := []ids{
		{"OrderPlaced", "cmd-42", "checkout-7", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"OrderPaid", "", "", ""},
		{"OrderShipped", "", "checkout-7", ""},
	}
	of := func(events []projection.PersistedEvent) []ids {
		var out []ids
		for _, e := range events {
			out = append(out, ids{e.EventType, e.CausationID, e.CorrelationID, e.TraceID})
		}
		return out
	}
	stream, err := store.ReadAggregateStream(ctx, pool, "Order", "o-1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, of(stream)); diff != "" {
		t.Errorf("ReadAggregateStream (-want +got):\n%s", diff)
	}
	log, err := store.ReadEvents(ctx, pool, projection.Position{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, of(log)); diff != "" {
		t.Errorf("ReadEvents (-want +got):\n%s", diff)
	}
}

func TestAppendRejectsInvalidEvents(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	tests := []struct {
		name    string
		typ, id string
		events  []projection.Event
		wantMsg string
	}{
		{"no type", "", "u", []projection.Event{ev("A")}, "aggregate type is empty"},
		{"no id", "User", "", []projection.Event{ev("A")}, "aggregate id is empty"},
		{"no events", "User", "u", nil, `no events to append to User "u"`},
		{"no event type", "User", "u", []projection.Event{ev("A"), {}}, `event 1 for User "u" has no type`},
		{"bad payload", "User", "u", []projection.Event{{EventType: "A", Payload: json.RawMessage(`{"a":`)}}, "event 0 (A) payload is not valid JSON"},
		{"bad metadata", "User", "u", []projection.Event{{EventType: "A", Metadata: json.RawMessage(`nope`)}}, "event 0 (A) metadata is not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := store.Append(ctx, pool, tt.typ, tt.id, projection.AnyVersion, tt.events...)
			if !errors.Is(err, projection.ErrInvalidEvent) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Append() = %v, want ErrInvalidEvent containing %q", err, tt.wantMsg)
			}
		})
	}
	if n := countEvents(t, pool, ""); n != 0 {
		t.Fatalf("%d events written by rejected appends", n)
	}
}

// Two transactions race to append three events each at the same expected
// version: exactly one wins, the other gets the typed error, and only the
// winner's events exist.
func TestAppendRaceOneWins(t *testing.T) {
	for _, iso := range []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.RepeatableRead} {
		t.Run(string(iso), func(t *testing.T) {
			ctx := t.Context()
			pool, store := newStore(t)
			for round := range 20 {
				agg := fmt.Sprint("race-", round)
				if _, err := store.Append(ctx, pool, "Account", agg, projection.NoStream, ev("Opened")); err != nil {
					t.Fatal(err)
				}
				results := raceAppends(t, pool, store, iso, agg)
				var winners, losers int
				var winner []projection.PersistedEvent
				for _, r := range results {
					switch {
					case r.err == nil:
						winners++
						winner = r.events
					case errors.Is(r.err, projection.ErrConcurrencyConflict):
						losers++
					default:
						t.Fatalf("round %d: unexpected error %v", round, r.err)
					}
				}
				if winners != 1 || losers != 1 {
					t.Fatalf("round %d: %d winners, %d losers; want 1 and 1", round, winners, losers)
				}
				stored, err := store.ReadAggregateStream(ctx, pool, "Account", agg, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(stored) != 4 {
					t.Fatalf("round %d: %d events stored, want 4 (1 + the winner's 3)", round, len(stored))
				}
				for i, e := range stored[1:] {
					if e.EventID != winner[i].EventID {
						t.Fatalf("round %d: stored event %d is %s, not the winner's %s", round, i+2, e.EventID, winner[i].EventID)
					}
				}
			}
		})
	}
}

type appendResult struct {
	events []projection.PersistedEvent
	err    error
}

func raceAppends(t *testing.T, pool *pgxpool.Pool, store *projection.Store, iso pgx.TxIsoLevel, agg string) []appendResult {
	t.Helper()
	ctx := t.Context()
	results := make([]appendResult, 2)
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(2)
	wg.Add(2)
	for i := range results {
		go func() {
			defer wg.Done()
			tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
			if err != nil {
				results[i].err = err
				ready.Done()
				return
			}
			defer func() { _ = tx.Rollback(ctx) }()
			// Take the snapshot now, before either appends.
			_, err = tx.Exec(ctx, "SELECT count(*) FROM events")
			ready.Done()
			if err != nil {
				results[i].err = err
				return
			}
			<-start
			evs, err := store.Append(ctx, tx, "Account", agg, projection.ExactVersion(1), ev("Deposited"), ev("Deposited"), ev("Withdrawn"))
			if err == nil {
				err = tx.Commit(ctx)
			}
			results[i] = appendResult{evs, err}
		}()
	}
	ready.Wait()
	close(start)
	wg.Wait()
	return results
}

// A transaction older than the aggregate's last writer may not append to
// it: projections read in transaction order and would see the new event
// before its predecessor.
func TestAppendRefusesOlderTransaction(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	old, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = old.Rollback(ctx) }()
	if _, err := old.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil { // takes an xid now
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, pool, "User", "u1", projection.NoStream, ev("UserCreated")); err != nil {
		t.Fatal(err)
	}
	_, err = store.Append(ctx, old, "User", "u1", projection.AnyVersion, ev("EmailVerified"))
	var ce *projection.ConcurrencyError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "older than the one that wrote the aggregate's last event") {
		t.Fatalf("append from older transaction: %v, want a *ConcurrencyError about transaction age", err)
	}
	// The failed append ran in a savepoint: the caller's transaction is usable.
	if _, err := old.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("caller's transaction broken after refused append: %v", err)
	}
	if err := old.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, pool, ""); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

func TestReadAggregateStreamBounds(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	var events []projection.Event
	for i := range 10 {
		events = append(events, ev(fmt.Sprint("E", i+1)))
	}
	if _, err := store.Append(ctx, pool, "User", "u1", projection.NoStream, events...); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, pool, "User", "u2", projection.NoStream, ev("Other")); err != nil {
		t.Fatal(err)
	}
	v := func(n int64) *int64 { return &n }
	tests := []struct {
		name     string
		from, to *int64
		want     []int64
	}{
		{"all", nil, nil, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"from snapshot", v(8), nil, []int64{8, 9, 10}},
		{"up to", nil, v(3), []int64{1, 2, 3}},
		{"window", v(4), v(6), []int64{4, 5, 6}},
		{"beyond", v(11), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := store.ReadAggregateStream(ctx, pool, "User", "u1", tt.from, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			var versions []int64
			for _, e := range got {
				versions = append(versions, e.AggregateVersion)
				if e.EventType != fmt.Sprint("E", e.AggregateVersion) {
					t.Fatalf("version %d has type %s", e.AggregateVersion, e.EventType)
				}
			}
			if diff := cmp.Diff(tt.want, versions); diff != "" {
				t.Fatalf("versions (-want +got):\n%s", diff)
			}
		})
	}
}

// The horizon, deterministically: an open transaction holding a low global
// position holds back everything after it, and nothing is skipped once it
// commits.
func TestReadEventsStopsAtHorizon(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	first, err := store.Append(ctx, pool, "A", "a0", projection.NoStream, ev("Before"))
	if err != nil {
		t.Fatal(err)
	}

	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	late, err := store.Append(ctx, slow, "A", "a1", projection.NoStream, ev("Late"))
	if err != nil {
		t.Fatal(err)
	}
	fast, err := store.Append(ctx, pool, "A", "a2", projection.NoStream, ev("Fast"))
	if err != nil {
		t.Fatal(err)
	}
	if late[0].GlobalPosition >= fast[0].GlobalPosition {
		t.Fatalf("test set-up: the late event (%d) should have the lower position (fast %d)", late[0].GlobalPosition, fast[0].GlobalPosition)
	}

	got, err := store.ReadEvents(ctx, pool, projection.Position{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].EventID != first[0].EventID {
		t.Fatalf("with a writer in flight, read %d events; want only the one before it", len(got))
	}
	// A reader ordered by global position alone would now be at fast's
	// position and never see late. We must see both, late first.
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = store.ReadEvents(ctx, pool, got[0].Position(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].EventID != late[0].EventID || got[1].EventID != fast[0].EventID {
		t.Fatalf("after the slow writer committed, read %+v; want late then fast", got)
	}
	if _, err := store.ReadEvents(ctx, pool, projection.Position{}, 0); err == nil {
		t.Fatal("ReadEvents with limit 0 succeeded")
	}
}
