// Package loadgen generates the demo domain's events (see package demo) in
// volume, for `projectionist events generate`, benchmarks and tests.
//
// Events are spread over a fixed set of users. A user's stream always starts
// with UserCreated; then the user verifies their email (once), places
// orders, and a few users are deactivated (never more than a tenth of them,
// over all runs), after which nothing more happens to them. Every
// OrderPlaced is the single event of a new Order aggregate whose customer is
// the user.
//
// The users are the same on every run: Generate first reads what earlier
// runs did to them, and carries on. Appends go through
// [projection.Store.Append] with optimistic concurrency: each one expects
// the user's stream at the version the generator last saw, and an append
// that loses a race (to another appender of this run, or to another
// process) reloads the stream and decides again.
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// Bounds and defaults of [Options].
const (
	DefaultAggregates    = 100
	DefaultConcurrency   = 1
	MaxConcurrency       = 256
	DefaultProgressEvery = time.Second
	// MaxAttempts bounds how often one event is retried after concurrency
	// conflicts before Generate gives up.
	MaxAttempts = 100
)

// Options configures [Generate]. Fields whose zero value is documented as a
// default may be left zero.
type Options struct {
	// Count is how many events to append. Required: at least 1.
	Count int
	// Aggregates is how many users the events are spread over, with ids
	// "user-000000", "user-000001", ... The ids are the same on every run,
	// so a later run carries on with the users of an earlier one. Orders
	// are aggregates of their own, so the log ends up with more aggregates
	// than this. Must not be negative. Defaults to 100.
	Aggregates int
	// Rate is the target number of events per second over all appenders.
	// Must be a finite number, not negative. Defaults to 0: as fast as
	// possible.
	Rate float64
	// Concurrency is how many appends run at once, each on its own
	// connection from the pool. Between 1 and MaxConcurrency. Defaults to 1.
	Concurrency int
	// Progress, if not nil, receives a progress line every ProgressEvery
	// while Generate runs, e.g.
	// "generated 12000/100000 events (8400/s), eta 11s".
	Progress io.Writer
	// ProgressEvery is the interval between progress lines. Must not be
	// negative. Defaults to 1s.
	ProgressEvery time.Duration
	// Store appends the events. Defaults to projection.NewStore().
	Store *projection.Store

	// beforeAppend, if set, is called before every append attempt to a
	// user's stream: tests use it to race the generator.
	beforeAppend func(userID string)
}

// ErrInvalidOptions is matched (with errors.Is) by every [*OptionError].
var ErrInvalidOptions = errors.New("invalid load generator options")

// OptionError reports an invalid field of [Options].
type OptionError struct {
	// Option is the field's name, e.g. "Count".
	Option string
	// Value is the rejected value, formatted.
	Value string
	// Want says what the field must be, e.g. "must be at least 1".
	Want string
}

// Error names the field, its value and the rule it broke.
func (e *OptionError) Error() string {
	return fmt.Sprintf("%s: %s is %s: %s", ErrInvalidOptions, e.Option, e.Value, e.Want)
}

// Is makes errors.Is(err, ErrInvalidOptions) true.
func (e *OptionError) Is(target error) bool { return target == ErrInvalidOptions }

// WithDefaults returns o with every zero field that has a default set to
// it.
func (o Options) WithDefaults() Options {
	if o.Aggregates == 0 {
		o.Aggregates = DefaultAggregates
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	if o.Store == nil {
		o.Store = projection.NewStore()
	}
	return o
}

// Validate returns an [*OptionError] for the first invalid field, checked
// as given (call WithDefaults first to accept zero values).
func (o Options) Validate() error {
	switch {
	case o.Count < 1:
		return &OptionError{"Count", fmt.Sprint(o.Count), "must be at least 1"}
	case o.Aggregates < 1:
		return &OptionError{"Aggregates", fmt.Sprint(o.Aggregates), "must be at least 1"}
	case math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0):
		return &OptionError{"Rate", fmt.Sprint(o.Rate), "must be a finite number of events per second (0 for as fast as possible)"}
	case o.Rate < 0:
		return &OptionError{"Rate", fmt.Sprint(o.Rate), "must not be negative (0 for as fast as possible)"}
	case o.Concurrency < 1 || o.Concurrency > MaxConcurrency:
		return &OptionError{"Concurrency", fmt.Sprint(o.Concurrency), fmt.Sprintf("must be between 1 and %d", MaxConcurrency)}
	case o.ProgressEvery <= 0:
		return &OptionError{"ProgressEvery", o.ProgressEvery.String(), "must be positive"}
	}
	return nil
}

// Result says what [Generate] appended.
type Result struct {
	// Events is how many events were appended.
	Events int
	// ByType is how many events of each type were appended; every one of
	// the four types has an entry.
	ByType map[string]int
	// AmountCents is the sum of the amount_cents of the OrderPlaced events
	// appended: what the revenue projection's total grows by.
	AmountCents int64
	// Conflicts is how many appends lost an optimistic-concurrency race and
	// were retried.
	Conflicts int
	// Elapsed is how long Generate spent appending (after reading the
	// users' streams as earlier runs left them).
	Elapsed time.Duration
	// Before is the users' state as Generate found it, before appending:
	// what earlier runs (or other writers) did to them. A run whose users
	// all exist appends no UserCreated, and one whose users have also all
	// verified their email while [MaxDeactivated] of them are deactivated
	// appends only OrderPlaced.
	Before Users
}

// Users counts the generator's users (Options.Aggregates of them) by what
// their streams hold.
type Users struct {
	// Existing counts the users whose stream exists (starts with
	// UserCreated).
	Existing int
	// Verified counts the users whose email is verified.
	Verified int
	// Deactivated counts the deactivated users.
	Deactivated int
}

// MaxDeactivated is the most of users the generator deactivates, over all
// runs: a tenth, at least one but never the only user, so that most users
// stay active and can keep placing orders.
func MaxDeactivated(users int) int {
	if users < 2 {
		return 0
	}
	return max(1, users/10)
}

// UserID returns the id of the generator's i-th user.
func UserID(i int) string { return fmt.Sprintf("user-%06d", i) }

// eventTypes lists the generated types; counters are indexed alike.
var eventTypes = [...]string{demo.EventUserCreated, demo.EventEmailVerified, demo.EventUserDeactivated, demo.EventOrderPlaced}

const (
	iUserCreated = iota
	iEmailVerified
	iUserDeactivated
	iOrderPlaced
)

// userState is what the generator knows of a user's stream.
type userState struct {
	version                        int64
	created, verified, deactivated bool
}

// apply folds one event of the user's stream into s.
func (s userState) apply(eventType string, version int64) userState {
	switch eventType {
	case demo.EventUserCreated:
		s.created = true
	case demo.EventEmailVerified:
		s.verified = true
	case demo.EventUserDeactivated:
		s.deactivated = true
	}
	s.version = max(s.version, version)
	return s
}

type generator struct {
	opts  Options
	pool  *pgxpool.Pool
	start time.Time
	// maxDeactivated caps how many of the users may be deactivated, by
	// this run and earlier ones: MaxDeactivated.
	maxDeactivated int64
	// before is the users' state as load found it.
	before Users

	mu    sync.Mutex
	users map[int]userState // absent: not seen yet, assumed not created

	tickets  atomic.Int64
	appended atomic.Int64
	// deactivated counts the deactivated users, earlier runs' included.
	deactivated atomic.Int64
	conflicts   atomic.Int64
	amount      atomic.Int64
	byType      [len(eventTypes)]atomic.Int64
}

// Generate appends opts.Count events of the demo domain to pool's log (see
// the package documentation) and returns what it appended. On failure or
// cancellation it stops the other appenders and returns what was appended
// so far together with the error.
func Generate(ctx context.Context, pool *pgxpool.Pool, opts Options) (Result, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return Result{}, err
	}
	if pool == nil {
		return Result{}, fmt.Errorf("%w: pool is nil", ErrInvalidOptions)
	}
	g := &generator{opts: opts, pool: pool, users: map[int]userState{}, maxDeactivated: int64(MaxDeactivated(opts.Aggregates))}
	if err := g.load(ctx); err != nil {
		return Result{}, err
	}
	g.start = time.Now() // the rate's clock starts with the first append

	stopProgress := g.reportProgress()
	eg, egCtx := errgroup.WithContext(ctx)
	for range opts.Concurrency {
		eg.Go(func() error { return g.appender(egCtx) })
	}
	err := eg.Wait()
	stopProgress()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return g.result(), err
}

func (g *generator) result() Result {
	r := Result{
		Events:      int(g.appended.Load()),
		ByType:      make(map[string]int, len(eventTypes)),
		AmountCents: g.amount.Load(),
		Conflicts:   int(g.conflicts.Load()),
		Elapsed:     time.Since(g.start),
		Before:      g.before,
	}
	for i, t := range eventTypes {
		r.ByType[t] = int(g.byType[i].Load())
	}
	return r
}

// appender appends events until every ticket is taken.
func (g *generator) appender(ctx context.Context) error {
	for {
		ticket := g.tickets.Add(1) - 1
		if ticket >= int64(g.opts.Count) || ctx.Err() != nil {
			return nil
		}
		if g.opts.Rate > 0 {
			due := g.start.Add(time.Duration(float64(ticket) / g.opts.Rate * float64(time.Second)))
			if err := sleepUntil(ctx, due); err != nil {
				return nil // cancelled: Generate reports ctx's error
			}
		}
		if err := g.appendOne(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("appending event %d of %d: %w", ticket+1, g.opts.Count, err)
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// appendOne decides and appends one event, retrying on conflicts.
func (g *generator) appendOne(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		i, st, err := g.pick()
		if err != nil {
			return err
		}
		id := UserID(i)
		kind, aggType, aggID, expected, ev, amount := g.decide(id, st)
		if aggType == demo.AggregateUser && g.opts.beforeAppend != nil {
			g.opts.beforeAppend(id)
		}
		// The id is chosen here so that an append cut short by a cancel
		// can be looked up: its COMMIT may have reached the server.
		ev.EventID = uuid.Must(uuid.NewV7())
		var out []projection.PersistedEvent
		err = bounded(ctx, "appending an event", func(ctx context.Context) (err error) {
			out, err = g.opts.Store.Append(ctx, g.pool, aggType, aggID, expected, ev)
			return err
		})
		if err != nil && ctx.Err() != nil && g.committed(ev.EventID) {
			// Cancelled, but it is in the log: count it, so that the
			// Result says exactly what was appended.
			g.byType[kind].Add(1)
			g.amount.Add(amount)
			g.appended.Add(1)
			return err
		}
		if errors.Is(err, projection.ErrConcurrencyConflict) {
			g.conflicts.Add(1)
			if attempt >= MaxAttempts {
				return fmt.Errorf("giving up after %d concurrency conflicts: %w", attempt, err)
			}
			if err := bounded(ctx, "reading a user's stream", func(ctx context.Context) error { return g.reload(ctx, i) }); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if aggType == demo.AggregateUser {
			g.learn(i, st.apply(ev.EventType, out[0].AggregateVersion))
		}
		g.byType[kind].Add(1)
		g.amount.Add(amount)
		g.appended.Add(1)
		return nil
	}
}

// committed reports whether the event with id is in the log, asked on a
// context of its own (the run's is cancelled).
func (g *generator) committed(id uuid.UUID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), StatementTimeout)
	defer cancel()
	var found bool
	err := g.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM events WHERE event_id = $1)", id).Scan(&found)
	return err == nil && found
}

// pick chooses a user that is not deactivated, as far as the generator
// knows, and returns its state.
func (g *generator) pick() (int, userState, error) {
	n := g.opts.Aggregates
	g.mu.Lock()
	defer g.mu.Unlock()
	for range 32 {
		i := rand.IntN(n)
		if st := g.users[i]; !st.deactivated {
			return i, st, nil
		}
	}
	// Unlikely, since the generator deactivates at most a tenth of the
	// users, unless another writer deactivated most of them: look at
	// every user.
	from := rand.IntN(n)
	for k := range n {
		i := (from + k) % n
		if st := g.users[i]; !st.deactivated {
			return i, st, nil
		}
	}
	return 0, userState{}, fmt.Errorf("every one of the %d users is deactivated: generate events for more users (Aggregates)", n)
}

// decide returns the next event for user id in state st, and where to
// append it.
func (g *generator) decide(id string, st userState) (kind int, aggType, aggID string, expected projection.ExpectedVersion, ev projection.Event, amountCents int64) {
	email := id + "@example.com"
	userEvent := func(kind int, payload any) (int, string, string, projection.ExpectedVersion, projection.Event, int64) {
		return kind, demo.AggregateUser, id, projection.ExactVersion(st.version),
			projection.Event{EventType: eventTypes[kind], Payload: mustJSON(payload)}, 0
	}
	switch {
	case !st.created:
		return userEvent(iUserCreated, demo.UserCreated{Email: email})
	case !st.verified && rand.IntN(100) < 30:
		return userEvent(iEmailVerified, demo.EmailVerified{Email: email})
	case rand.IntN(100) < 2 && g.deactivated.Load() < g.maxDeactivated:
		return userEvent(iUserDeactivated, demo.UserDeactivated{Reason: "closed by the load generator"})
	}
	amountCents = 100 + rand.Int64N(99_900) // $1.00 to $999.99
	return iOrderPlaced, demo.AggregateOrder, "order-" + uuid.Must(uuid.NewV7()).String(), projection.NoStream,
		projection.Event{EventType: demo.EventOrderPlaced, Payload: mustJSON(demo.OrderPlaced{CustomerID: id, AmountCents: amountCents})},
		amountCents
}

// loadChunk is how many users' states one query of load reads.
const loadChunk = 10000

// load reads what earlier runs (or other processes) appended to the users'
// streams.
func (g *generator) load(ctx context.Context) error {
	for from := 0; from < g.opts.Aggregates; from += loadChunk {
		ids := make([]string, 0, min(loadChunk, g.opts.Aggregates-from))
		index := make(map[string]int, cap(ids))
		for i := from; i < from+cap(ids); i++ {
			ids = append(ids, UserID(i))
			index[UserID(i)] = i
		}
		qctx, cancel := context.WithTimeout(ctx, StatementTimeout)
		defer cancel()
		rows, err := g.pool.Query(qctx, `
			SELECT aggregate_id, max(aggregate_version),
			       bool_or(event_type = $3), bool_or(event_type = $4), bool_or(event_type = $5)
			FROM events
			WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = ANY($6::text[])
			GROUP BY aggregate_id`,
			g.opts.Store.BoundedContext(), demo.AggregateUser,
			demo.EventUserCreated, demo.EventEmailVerified, demo.EventUserDeactivated, ids)
		if err != nil {
			return fmt.Errorf("reading the users' streams: %w", err)
		}
		var id string
		var st userState
		_, err = pgx.ForEachRow(rows, []any{&id, &st.version, &st.created, &st.verified, &st.deactivated}, func() error {
			g.users[index[id]] = st
			if st.created {
				g.before.Existing++
			}
			if st.verified {
				g.before.Verified++
			}
			if st.deactivated {
				g.before.Deactivated++
				g.deactivated.Add(1)
			}
			return nil
		})
		if err != nil && ctx.Err() == nil && qctx.Err() != nil {
			err = &dbconn.TimeoutError{Op: "reading the users' streams", Timeout: StatementTimeout, Err: err}
		}
		if err != nil {
			return fmt.Errorf("reading the users' streams: %w", err)
		}
	}
	return nil
}

// StatementTimeout bounds each of the generator's round trips to the
// database: one that does not answer within it fails the run with a
// *dbconn.TimeoutError instead of hanging it.
const StatementTimeout = 10 * time.Second

// bounded runs fn within StatementTimeout, reporting a database that did
// not answer in time as a *dbconn.TimeoutError.
func bounded(ctx context.Context, what string, fn func(context.Context) error) error {
	fctx, cancel := context.WithTimeout(ctx, StatementTimeout)
	defer cancel()
	err := fn(fctx)
	if err != nil && ctx.Err() == nil && fctx.Err() != nil {
		return &dbconn.TimeoutError{Op: what, Timeout: StatementTimeout, Err: err}
	}
	return err
}

// reload reads the part of user i's stream the generator has not seen.
func (g *generator) reload(ctx context.Context, i int) error {
	g.mu.Lock()
	st := g.users[i]
	g.mu.Unlock()
	from := st.version + 1
	events, err := g.opts.Store.ReadAggregateStream(ctx, g.pool, demo.AggregateUser, UserID(i), &from, nil)
	if err != nil {
		return err
	}
	for _, e := range events {
		st = st.apply(e.EventType, e.AggregateVersion)
	}
	g.learn(i, st)
	return nil
}

// learn records st as user i's state unless the generator already knows a
// later one. The deactivated users are counted here, where the generator
// first learns of each, whoever deactivated it.
func (g *generator) learn(i int, st userState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.users[i]
	if cur.version >= st.version {
		return
	}
	if st.deactivated && !cur.deactivated {
		g.deactivated.Add(1)
	}
	g.users[i] = st
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the payload types always marshal
	}
	return b
}

// reportProgress writes a progress line every ProgressEvery until the
// returned function is called.
func (g *generator) reportProgress() (stop func()) {
	if g.opts.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(g.opts.ProgressEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintln(g.opts.Progress, progressLine(g.appended.Load(), int64(g.opts.Count), time.Since(g.start)))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// progressLine formats e.g. "generated 12000/100000 events (8400/s), eta 11s".
func progressLine(done, total int64, elapsed time.Duration) string {
	rate := float64(done) / elapsed.Seconds()
	eta := "unknown"
	if rate > 0 {
		eta = (time.Duration(float64(total-done) / rate * float64(time.Second))).Round(time.Second).String()
	}
	return fmt.Sprintf("generated %d/%d events (%.0f/s), eta %s", done, total, rate, eta)
}
