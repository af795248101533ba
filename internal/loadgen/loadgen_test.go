package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/loadgen"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/pkg/projection/projectiontest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// logTotals reads from the log what Result claims was appended.
func logTotals(t *testing.T, pool *pgxpool.Pool) (byType map[string]int, amountCents int64) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT event_type, count(*) FROM events GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	byType = map[string]int{}
	var typ string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&typ, &n}, func() error { byType[typ] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum((payload->>'amount_cents')::bigint), 0)::bigint
		FROM events WHERE event_type = 'OrderPlaced'`).Scan(&amountCents); err != nil {
		t.Fatal(err)
	}
	return byType, amountCents
}

// checkStreams checks every user's and order's stream, read back with
// ReadAggregateStream: versions 1..n in order, a user created first and
// only once, verified at most once, nothing after deactivation, and every
// order the single event of its aggregate, placed by a created user.
func checkStreams(t *testing.T, pool *pgxpool.Pool, aggregates int) {
	t.Helper()
	ctx := context.Background()
	store := projection.NewStore()
	created := map[string]bool{}
	for i := range aggregates {
		id := loadgen.UserID(i)
		events, err := store.ReadAggregateStream(ctx, pool, demo.AggregateUser, id, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		verified, deactivated := 0, false
		for k, e := range events {
			if e.AggregateVersion != int64(k+1) {
				t.Fatalf("%s: event %d has version %d", id, k, e.AggregateVersion)
			}
			if deactivated {
				t.Errorf("%s: %s at version %d after UserDeactivated", id, e.EventType, e.AggregateVersion)
			}
			switch e.EventType {
			case demo.EventUserCreated:
				if k != 0 {
					t.Errorf("%s: UserCreated at version %d", id, e.AggregateVersion)
				}
				var p demo.UserCreated
				if err := json.Unmarshal(e.Payload, &p); err != nil || p.Email != id+"@example.com" {
					t.Errorf("%s: UserCreated payload %s (%v)", id, e.Payload, err)
				}
				created[id] = true
			case demo.EventEmailVerified:
				verified++
			case demo.EventUserDeactivated:
				deactivated = true
			default:
				t.Errorf("%s: unexpected %s", id, e.EventType)
			}
			if k == 0 && e.EventType != demo.EventUserCreated {
				t.Errorf("%s starts with %s, want UserCreated", id, e.EventType)
			}
		}
		if verified > 1 {
			t.Errorf("%s verified %d times", id, verified)
		}
	}
	rows, err := pool.Query(ctx, `SELECT aggregate_id, count(*), min(payload->>'customer_id'), min(aggregate_version)
		FROM events WHERE aggregate_type = 'Order' GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var order, customer string
	var n, version int64
	_, err = pgx.ForEachRow(rows, []any{&order, &n, &customer, &version}, func() error {
		if n != 1 || version != 1 {
			t.Errorf("order %s has %d events, first at version %d; want 1 at version 1", order, n, version)
		}
		if !created[customer] {
			t.Errorf("order %s placed by %q, which is not a created user", order, customer)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGenerateAppendsCountedEventsInOrder(t *testing.T) {
	ctx := context.Background()
	pool := projectiontest.NewPool(t)
	res, err := loadgen.Generate(ctx, pool, loadgen.Options{Count: 600, Aggregates: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 600 || res.Conflicts != 0 {
		t.Errorf("Result: %d events, %d conflicts; want 600, 0 (one appender, fresh log)", res.Events, res.Conflicts)
	}
	byType, amount := logTotals(t, pool)
	if diff := cmp.Diff(byType, res.ByType); diff != "" {
		t.Errorf("Result.ByType differs from the log (-log +result):\n%s", diff)
	}
	if amount != res.AmountCents {
		t.Errorf("Result.AmountCents = %d, log holds %d", res.AmountCents, amount)
	}
	// 600 picks of 20 users: all are created (the chance that one is
	// never picked is 20 * (19/20)^600, about 1e-12), and orders dominate.
	if res.ByType[demo.EventUserCreated] != 20 || res.ByType[demo.EventEmailVerified] < 1 ||
		res.ByType[demo.EventUserDeactivated] > 2 || res.ByType[demo.EventOrderPlaced] < 400 {
		t.Errorf("unexpected mix: %v", res.ByType)
	}
	checkStreams(t, pool, 20)
}

func TestGenerateConcurrentRetriesConflicts(t *testing.T) {
	ctx := context.Background()
	pool := projectiontest.NewPool(t)
	store := projection.NewStore()
	// The users exist already (an earlier run, another process): the
	// generator carries on with them.
	for i := range 4 {
		id := loadgen.UserID(i)
		ev := projection.Event{EventType: demo.EventUserCreated, Payload: json.RawMessage(`{"email":"` + id + `@example.com"}`)}
		if _, err := store.Append(ctx, pool, demo.AggregateUser, id, projection.NoStream, ev); err != nil {
			t.Fatal(err)
		}
	}
	// Another writer gets in before the generator's first append to a
	// user's stream, which therefore conflicts; eight appenders on four
	// users race each other too.
	var once sync.Once
	opts := loadgen.WithBeforeAppend(loadgen.Options{Count: 400, Aggregates: 4, Concurrency: 8}, func(id string) {
		once.Do(func() {
			ev := projection.Event{EventType: demo.EventEmailVerified, Payload: json.RawMessage(`{"email":"` + id + `@example.com"}`)}
			if _, err := store.Append(ctx, pool, demo.AggregateUser, id, projection.ExactVersion(1), ev); err != nil {
				t.Error(err)
			}
		})
	})
	res, err := loadgen.Generate(ctx, pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 400 || res.Conflicts < 1 || res.ByType[demo.EventUserCreated] != 0 {
		t.Errorf("Result: %d events, %d conflicts, %d UserCreated; want 400, at least 1, 0", res.Events, res.Conflicts, res.ByType[demo.EventUserCreated])
	}
	byType, amount := logTotals(t, pool)
	want := map[string]int{}
	for typ, n := range res.ByType {
		if n > 0 {
			want[typ] = n
		}
	}
	want[demo.EventUserCreated] += 4
	want[demo.EventEmailVerified]++
	if diff := cmp.Diff(want, byType); diff != "" {
		t.Errorf("log differs from Result plus the other writer's events (-want +log):\n%s", diff)
	}
	if amount != res.AmountCents {
		t.Errorf("Result.AmountCents = %d, log holds %d", res.AmountCents, amount)
	}
	checkStreams(t, pool, 4)
}

// Later runs carry on with the same users, and deactivate no more than a
// tenth of them over all runs.
func TestGenerateCarriesOnAcrossRuns(t *testing.T) {
	ctx := context.Background()
	pool := projectiontest.NewPool(t)
	for run := range 5 {
		res, err := loadgen.Generate(ctx, pool, loadgen.Options{Count: 300, Aggregates: 10})
		if err != nil {
			t.Fatal(err)
		}
		if run > 0 && (res.ByType[demo.EventUserCreated] != 0 || res.Conflicts != 0) {
			t.Errorf("run %d: %d users created, %d conflicts; want 0, 0", run, res.ByType[demo.EventUserCreated], res.Conflicts)
		}
	}
	byType, _ := logTotals(t, pool)
	if byType[demo.EventUserCreated] != 10 || byType[demo.EventUserDeactivated] > 1 || byType[demo.EventEmailVerified] > 10 {
		t.Errorf("after 5 runs on 10 users: %v; want 10 UserCreated, at most 1 UserDeactivated and 10 EmailVerified", byType)
	}
	checkStreams(t, pool, 10)
}

func TestGenerateRejectsInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		opts loadgen.Options
		want string
	}{
		{loadgen.Options{}, "invalid load generator options: Count is 0: must be at least 1"},
		{loadgen.Options{Count: -1}, "invalid load generator options: Count is -1: must be at least 1"},
		{loadgen.Options{Count: 1, Aggregates: -5}, "invalid load generator options: Aggregates is -5: must be at least 1"},
		{loadgen.Options{Count: 1, Rate: -0.5}, "invalid load generator options: Rate is -0.5: must not be negative (0 for as fast as possible)"},
		{loadgen.Options{Count: 1, Rate: math.NaN()}, "invalid load generator options: Rate is NaN: must be a finite number of events per second (0 for as fast as possible)"},
		{loadgen.Options{Count: 1, Rate: math.Inf(1)}, "invalid load generator options: Rate is +Inf: must be a finite number of events per second (0 for as fast as possible)"},
		{loadgen.Options{Count: 1, Concurrency: -2}, "invalid load generator options: Concurrency is -2: must be between 1 and 256"},
		{loadgen.Options{Count: 1, Concurrency: 257}, "invalid load generator options: Concurrency is 257: must be between 1 and 256"},
		{loadgen.Options{Count: 1, ProgressEvery: -time.Second}, "invalid load generator options: ProgressEvery is -1s: must be positive"},
	} {
		// The pool is never touched: options are checked first.
		_, err := loadgen.Generate(context.Background(), nil, tc.opts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%+v: got %v, want %q", tc.opts, err, tc.want)
			continue
		}
		var oe *loadgen.OptionError
		if !errors.Is(err, loadgen.ErrInvalidOptions) || !errors.As(err, &oe) || !strings.HasPrefix(tc.want, "invalid load generator options: "+oe.Option+" is ") {
			t.Errorf("%+v: %v is not an *OptionError matching ErrInvalidOptions", tc.opts, err)
		}
	}
	if err := (loadgen.Options{Count: 1}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults are invalid: %v", err)
	}
}

// Rate spaces events out (event i is not appended before i/Rate seconds),
// and a long run writes progress lines.
func TestGenerateRateAndProgress(t *testing.T) {
	pool := projectiontest.NewPool(t)
	var progress bytes.Buffer
	res, err := loadgen.Generate(context.Background(), pool, loadgen.Options{
		Count: 101, Aggregates: 5, Rate: 1000, Concurrency: 4, Progress: &progress, ProgressEvery: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 101 {
		t.Errorf("appended %d events, want 101", res.Events)
	}
	if res.Elapsed < 100*time.Millisecond {
		t.Errorf("101 events at 1000/s took %s; the last one is due after 100ms", res.Elapsed)
	}
	lines := strings.Split(strings.TrimSuffix(progress.String(), "\n"), "\n")
	// At least 100 intervals of 1ms pass during the run; one line is
	// enough to show that progress is reported.
	re := regexp.MustCompile(`^generated \d+/101 events \(\d+/s\), eta (\d+(\.\d+)?[a-zµ]+|unknown)$`)
	if progress.Len() == 0 {
		t.Fatal("no progress line")
	}
	for _, l := range lines {
		if !re.MatchString(l) {
			t.Errorf("progress line %q does not match %s", l, re)
		}
	}
}

// Cancelling stops the appenders; Result counts exactly what reached the
// log.
func TestGenerateCancelled(t *testing.T) {
	pool := projectiontest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res, err := loadgen.Generate(ctx, pool, loadgen.Options{Count: 100000, Rate: 200, Concurrency: 2})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	byType, amount := logTotals(t, pool)
	total := 0
	for _, n := range byType {
		total += n
	}
	if total != res.Events || amount != res.AmountCents || res.Events >= 100000 {
		t.Errorf("Result: %d events, %d cents; log: %d events, %d cents", res.Events, res.AmountCents, total, amount)
	}
}
