package projection

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// WakeupChannel is the channel on which the schema notifies appends (see
// migration 0008_wakeups): a statement-level trigger on events calls
// pg_notify once per INSERT statement, delivered when the appending
// transaction commits, so plain-SQL writers wake processors too.
const WakeupChannel = "projectionist_events"

// listenerPingInterval is how long the listener waits for a notification
// before checking, with a query, that its connection still answers: a
// connection lost without a word (a network blackhole) is noticed within
// it, besides TCP keepalives.
const listenerPingInterval = 30 * time.Second

// Listener holds one database connection that LISTENs on [WakeupChannel]
// and wakes the processors that use it (see [ProcessorConfig.Listener])
// as soon as an event for them commits. Every processor of a process
// should share one Listener, so that the process holds one listening
// connection however many projections and partitions it runs; package
// runner and package worker do that.
//
// A Listener connects when the first processor starts using it and
// disconnects when the last one stops; it needs no Run of its own. It
// opens its connection with its pool's settings (DSN, TLS, dialer,
// BeforeConnect and AfterConnect) but apart from the pool, so it never
// holds one of the pool's connections: count one connection more per
// process against max_connections.
//
// A lost connection is reopened with capped exponential backoff. While it
// is down the processors poll at their PollInterval; once it is back,
// every processor is woken once, since notifications sent meanwhile were
// lost. Notifications only save latency: a processor that misses one
// still finds the event at its next poll.
//
// The database sends notifications only for writers whose session sees
// projectionist.wakeups = on (see [WakeupsListen]). Each time its
// connection opens, the Listener reads that setting on its own session,
// which reflects database-level (ALTER DATABASE) and its own role's
// settings but not those of writers that connect as other roles. If it is
// not on, the Listener logs one warning (once per Listener) naming the
// setting and the ALTER DATABASE command, and its processors poll at their
// PollInterval instead of the long WakeupPollInterval, as if it were
// down; notifications that do arrive still wake them.
type Listener struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	// Lifecycle: refs counts subscriptions; while it is above zero a
	// goroutine keeps the connection, cancelled by stop and closed when
	// done is.
	runMu sync.Mutex
	refs  int
	stop  context.CancelFunc
	done  chan struct{}

	subsMu sync.Mutex
	subs   map[*subscription]struct{}

	connected atomic.Bool
	// enabled: the session of the last connection saw
	// projectionist.wakeups = on; set before connected turns true.
	enabled       atomic.Bool
	warned        atomic.Bool
	notifications atomic.Int64
	reconnects    atomic.Int64
	connects      atomic.Int64
}

// ListenerStats counts what a [Listener] has done.
type ListenerStats struct {
	// Connected is true while the listener's connection is open and
	// listening.
	Connected bool
	// NotificationsEnabled is true if the listener's session saw
	// projectionist.wakeups = on when its connection last opened, so
	// that appends through the same database and role notify. While it
	// is false its processors poll at PollInterval.
	NotificationsEnabled bool
	// Notifications is the number of notifications received.
	Notifications int64
	// Reconnects is the number of times the listener listened again after
	// losing its connection (or failing to open it) while processors
	// used it.
	Reconnects int64
}

// NewListener returns a listener that opens its connection with pool's
// settings. logger receives a line when the connection is lost and when it
// is back; nil discards them.
func NewListener(pool *pgxpool.Pool, logger *slog.Logger) *Listener {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Listener{pool: pool, log: logger, subs: map[*subscription]struct{}{}}
}

// Stats returns the listener's counters. It is safe to call at any time.
func (l *Listener) Stats() ListenerStats {
	return ListenerStats{Connected: l.connected.Load(), NotificationsEnabled: l.enabled.Load(),
		Notifications: l.notifications.Load(), Reconnects: l.reconnects.Load()}
}

// subscription is one processor run's interest in notifications.
type subscription struct {
	l *Listener
	// wake holds at most one pending wakeup: notifications that arrive
	// while the processor is busy fold into one.
	wake chan struct{}
	key  int
	// total is the partition count to filter event notifications by
	// (hash % total == key); 0 takes every one (not known yet, or a
	// strategy evaluated in Go), -1 none (an idle partition, which only a
	// topology change wakes).
	total atomic.Int64
	// notified is the highest transaction id of an event notification
	// this subscription took: if the processor's horizon has not passed
	// it, a committed event of its own is still held back by an older
	// transaction in flight.
	notified atomic.Uint64
	// retry is set by a dead-letter retry request.
	retry atomic.Bool
}

func (s *subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drain forgets a pending wakeup: called before a batch, whose snapshot
// sees every commit notified so far.
func (s *subscription) drain() {
	select {
	case <-s.wake:
	default:
	}
}

// subscribe registers a processor run, connecting if it is the first.
func (l *Listener) subscribe(key int) *subscription {
	s := &subscription{l: l, wake: make(chan struct{}, 1), key: key}
	l.subsMu.Lock()
	l.subs[s] = struct{}{}
	l.subsMu.Unlock()
	l.runMu.Lock()
	defer l.runMu.Unlock()
	if l.refs == 0 {
		if l.done != nil {
			<-l.done // the last run's connection is closing
		}
		ctx, cancel := context.WithCancel(context.Background())
		l.stop, l.done = cancel, make(chan struct{})
		go l.run(ctx, l.done)
	}
	l.refs++
	return s
}

// unsubscribe ends a processor run's subscription, disconnecting if it
// was the last.
func (s *subscription) unsubscribe() {
	l := s.l
	l.subsMu.Lock()
	delete(l.subs, s)
	l.subsMu.Unlock()
	l.runMu.Lock()
	defer l.runMu.Unlock()
	l.refs--
	if l.refs == 0 {
		l.stop()
	}
}

// each calls f for every subscription.
func (l *Listener) each(f func(*subscription)) {
	l.subsMu.Lock()
	defer l.subsMu.Unlock()
	for s := range l.subs {
		f(s)
	}
}

// run keeps a listening connection until ctx ends.
func (l *Listener) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	defer l.connected.Store(false)
	backoff := DefaultRetryInitialInterval
	for ctx.Err() == nil {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		l.reconnects.Add(1)
		// Down: wake everyone, so that each sleeps its PollInterval, not
		// the longer interval it uses while notifications arrive.
		l.each((*subscription).signal)
		wait := backoff/2 + rand.N(backoff)
		l.log.Warn("projection listener lost its connection; processors poll until it is back",
			"error", err.Error(), "retryIn", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, DefaultRetryMaxInterval)
	}
}

// listen connects, listens and dispatches notifications until the
// connection fails or ctx ends.
func (l *Listener) listen(ctx context.Context) error {
	pc := l.pool.Config()
	cc := pc.ConnConfig.Copy()
	if pc.BeforeConnect != nil {
		if err := pc.BeforeConnect(ctx, cc); err != nil {
			return err
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(cctx)
		cancel()
	}()
	if pc.AfterConnect != nil {
		if err := pc.AfterConnect(ctx, conn); err != nil {
			return err
		}
	}
	// The check first, LISTEN last: pg_stat_activity.query then names
	// what the session is for.
	if err := l.checkEnabled(ctx, conn); err != nil {
		return err
	}
	if err := l.exec(ctx, conn, listenSQL); err != nil {
		return err
	}
	if l.connects.Add(1) > 1 {
		l.log.Info("projection listener listening again")
	}
	// Notifications sent before LISTEN took effect are lost: wake
	// everyone once (a first connect too, for a processor that started
	// sleeping before it). Before Connected turns true, so that whoever
	// sees it knows this wakeup was sent.
	l.each((*subscription).signal)
	l.connected.Store(true)
	defer l.connected.Store(false)
	for {
		wctx, cancel := context.WithTimeout(ctx, listenerPingInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			l.notifications.Add(1)
			l.dispatch(n.Payload)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded) || conn.IsClosed():
			return err
		}
		// Quiet for a while: make sure the connection still answers
		// (LISTEN again is a no-op that keeps pg_stat_activity.query
		// naming what the session is for).
		if err := l.exec(ctx, conn, listenSQL); err != nil {
			return err
		}
	}
}

var listenSQL = "LISTEN " + pgx.Identifier{WakeupChannel}.Sanitize()

// WakeupsSetting is the setting that makes the schema's triggers notify
// (migration 0008_wakeups): they do only in sessions where it is 'on'.
const WakeupsSetting = "projectionist.wakeups"

// wakeupsSettingSQL reads WakeupsSetting as this session sees it (NULL
// when unset), with what a warning needs to name.
const wakeupsSettingSQL = `SELECT coalesce(current_setting('projectionist.wakeups', true), ''), current_database(), current_user`

// checkEnabled records whether conn's session sees WakeupsSetting on, and
// warns once per Listener if it does not.
func (l *Listener) checkEnabled(ctx context.Context, conn *pgx.Conn) error {
	sctx, cancel := context.WithTimeout(ctx, DefaultStatementTimeout)
	defer cancel()
	var value, db, role string
	if err := conn.QueryRow(sctx, wakeupsSettingSQL).Scan(&value, &db, &role); err != nil {
		return err
	}
	on := value == "on"
	l.enabled.Store(on)
	if !on && l.warned.CompareAndSwap(false, true) {
		l.log.Warn("projection listener: the database sends no wakeups for this session; processors poll at their poll interval",
			"setting", WakeupsSetting, "value", value, "database", db, "role", role,
			"enableWith", "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET "+WakeupsSetting+" = on",
			"note", "checked as this listener's role sees it; writers connecting as other roles need it too")
	}
	return nil
}

// exec runs sql on conn within DefaultStatementTimeout.
func (l *Listener) exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	sctx, cancel := context.WithTimeout(ctx, DefaultStatementTimeout)
	defer cancel()
	_, err := conn.Exec(sctx, sql)
	return err
}

// dispatch wakes the subscriptions a notification concerns (see the
// payloads in migration 0008_wakeups).
func (l *Listener) dispatch(payload string) {
	kind, rest, _ := strings.Cut(payload, " ")
	switch kind {
	case "e":
		xidText, hashText, hasHash := strings.Cut(rest, " ")
		xid, err := strconv.ParseUint(xidText, 10, 64)
		if err != nil {
			break // not ours to understand: wake everyone below
		}
		var hash uint64
		if hasHash {
			if hash, err = strconv.ParseUint(hashText, 10, 64); err != nil {
				hasHash = false
			}
		}
		l.each(func(s *subscription) {
			total := s.total.Load()
			if total < 0 || hasHash && total > 0 && int(hash%uint64(total)) != s.key {
				return
			}
			for {
				old := s.notified.Load()
				if xid <= old || s.notified.CompareAndSwap(old, xid) {
					break
				}
			}
			s.signal()
		})
		return
	case "r":
		l.each(func(s *subscription) { s.retry.Store(true); s.signal() })
		return
	}
	l.each((*subscription).signal)
}
