package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/projectionist/projectionist/pkg/projection"
)

// The events this worker reads: the ones `projectionist events generate`
// appends. A real team has its own; only the aggregate type and event type
// strings and the JSON payloads matter to a projection.
const (
	aggregateUser  = "User"
	aggregateOrder = "Order"

	eventUserCreated     = "UserCreated"
	eventEmailVerified   = "EmailVerified"
	eventUserDeactivated = "UserDeactivated"
	eventOrderPlaced     = "OrderPlaced"
)

// schema is the read models' DDL, run by the worker's Setup hook before the
// projections start (and retried while the database is unreachable). IF NOT
// EXISTS makes it safe for every pod to run it.
const schema = `
CREATE TABLE IF NOT EXISTS customer_directory (
	user_id    text PRIMARY KEY,
	email      text NOT NULL,
	verified   boolean NOT NULL DEFAULT false,
	active     boolean NOT NULL DEFAULT true,
	-- events applied to the row: a count that an event applied twice
	-- would make too large, so the row doubles as an exactly-once check.
	events     bigint NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS order_ledger (
	event_id     uuid PRIMARY KEY,
	order_id     text NOT NULL,
	customer_id  text NOT NULL,
	amount_cents bigint NOT NULL,
	placed_at    timestamptz NOT NULL
);`

// setup creates the read-model tables. An advisory lock keeps pods that
// start together from racing on CREATE TABLE IF NOT EXISTS, which can fail
// with a unique violation when two sessions create the same table at once.
func setup(ctx context.Context, db projection.DBTX) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('custom-worker schema'))"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
}

// CustomerDirectory keeps one row per user: email, verified, active. It
// receives User events only (a ScopedProjection: the filter runs in SQL).
//
// Every row belongs to one aggregate, and one aggregate's events all go to
// one partition, so partitions never write the same row: no lock waits or
// deadlocks between pods, whatever the partition count.
type CustomerDirectory struct{}

func (CustomerDirectory) Name() string              { return "customer_directory" }
func (CustomerDirectory) AggregateTypes() []string  { return []string{aggregateUser} }
func (CustomerDirectory) BoundedContexts() []string { return nil }

func (CustomerDirectory) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	switch e.EventType {
	case eventUserCreated:
		var p struct {
			Email string `json:"email"`
		}
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return fmt.Errorf("decoding %s payload: %w", e.EventType, err)
		}
		// A plain INSERT, not an upsert: an event applied twice would fail
		// the batch instead of passing unnoticed.
		_, err := tx.Exec(ctx, `INSERT INTO customer_directory (user_id, email) VALUES ($1, $2)`, e.AggregateID, p.Email)
		return err
	case eventEmailVerified:
		return update(ctx, tx, `UPDATE customer_directory SET verified = true, events = events + 1 WHERE user_id = $1`, e)
	case eventUserDeactivated:
		return update(ctx, tx, `UPDATE customer_directory SET active = false, events = events + 1 WHERE user_id = $1`, e)
	}
	return nil
}

// update runs an UPDATE of the event's user row and fails if there is none:
// the user's UserCreated always comes first in its partition.
func update(ctx context.Context, tx pgx.Tx, sql string, e *projection.PersistedEvent) error {
	tag, err := tx.Exec(ctx, sql, e.AggregateID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%s for user %q, which has no row", e.EventType, e.AggregateID)
	}
	return nil
}

// OrderLedger keeps one row per order placed, keyed by the event id, and
// counts the amounts in a Prometheus counter of its own.
type OrderLedger struct {
	// Placed counts the cents of the orders the ledger recorded. A batch
	// that rolls back has already added to it: a metric is not a read
	// model, and only the table is exact.
	Placed prometheus.Counter
}

func (OrderLedger) Name() string              { return "order_ledger" }
func (OrderLedger) AggregateTypes() []string  { return []string{aggregateOrder} }
func (OrderLedger) BoundedContexts() []string { return nil }

func (l OrderLedger) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	if e.EventType != eventOrderPlaced {
		return nil
	}
	var p struct {
		CustomerID  string `json:"customer_id"`
		AmountCents int64  `json:"amount_cents"`
	}
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		return fmt.Errorf("decoding %s payload: %w", e.EventType, err)
	}
	_, err := tx.Exec(ctx, `INSERT INTO order_ledger (event_id, order_id, customer_id, amount_cents, placed_at)
		VALUES ($1, $2, $3, $4, $5)`, e.EventID, e.AggregateID, p.CustomerID, p.AmountCents, e.CreatedAt)
	if err == nil && l.Placed != nil {
		l.Placed.Add(float64(p.AmountCents))
	}
	return err
}
