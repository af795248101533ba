package demo

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// UserCreated is the payload of a "UserCreated" event.
type UserCreated struct {
	Email string `json:"email"`
}

// OrderPlaced is the payload of an "OrderPlaced" event.
type OrderPlaced struct {
	CustomerID  string `json:"customer_id"`
	AmountCents int64  `json:"amount_cents"`
}

// UserStatsSchema creates the read model of [UserCountProjection].
const UserStatsSchema = `
CREATE TABLE IF NOT EXISTS user_stats (
    user_id    text PRIMARY KEY,
    email      text        NOT NULL,
    created_at timestamptz NOT NULL,
    active     boolean     NOT NULL DEFAULT true
)`

// UserCountProjection keeps one row per user in user_stats.
//
// It is a [projection.ScopedProjection]: it only receives events of "User"
// aggregates, and the filter runs in SQL.
type UserCountProjection struct{}

// Name identifies the projection's checkpoint.
func (*UserCountProjection) Name() string { return "user_count" }

// AggregateTypes limits the projection to User events.
func (*UserCountProjection) AggregateTypes() []string { return []string{"User"} }

// BoundedContexts accepts every bounded context.
func (*UserCountProjection) BoundedContexts() []string { return nil }

// Handle updates user_stats through the batch's transaction, so the write
// commits together with the checkpoint.
func (*UserCountProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	switch event.EventType {
	case "UserCreated":
		var payload UserCreated
		if err := json.Unmarshal(event.Payload, &payload); err != nil {
			return fmt.Errorf("decoding UserCreated: %w", err)
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO user_stats (user_id, email, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (user_id) DO NOTHING`,
			event.AggregateID, payload.Email, event.CreatedAt)
		return err

	case "UserDeactivated":
		_, err := tx.Exec(ctx, `UPDATE user_stats SET active = false WHERE user_id = $1`, event.AggregateID)
		return err
	}
	return nil
}

// RevenueSchema creates the read model of [RevenueProjection]: a single row.
const RevenueSchema = `
CREATE TABLE IF NOT EXISTS revenue (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    orders      bigint  NOT NULL,
    total_cents bigint  NOT NULL
)`

// RevenueProjection keeps the running total of all orders placed.
//
// Adding to a running total is not idempotent: applying an event twice would
// count it twice. It is correct here because the processor commits the
// write in the same transaction as the checkpoint, so every event's effect
// lands exactly once. (A read model outside this database, or a Handle that
// writes through another connection, would not get that guarantee.)
type RevenueProjection struct{}

// Name identifies the projection's checkpoint.
func (*RevenueProjection) Name() string { return "revenue" }

// AggregateTypes limits the projection to Order events.
func (*RevenueProjection) AggregateTypes() []string { return []string{"Order"} }

// BoundedContexts accepts every bounded context.
func (*RevenueProjection) BoundedContexts() []string { return nil }

// Handle adds each placed order to the total.
func (*RevenueProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	if event.EventType != "OrderPlaced" {
		return nil
	}
	var payload OrderPlaced
	if err := json.Unmarshal(event.Payload, &payload); err != nil {
		return fmt.Errorf("decoding OrderPlaced: %w", err)
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO revenue (orders, total_cents) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE
		SET orders = revenue.orders + 1, total_cents = revenue.total_cents + EXCLUDED.total_cents`,
		payload.AmountCents)
	return err
}

// ActivityLogSchema creates the read model of [ActivityLogProjection].
const ActivityLogSchema = `
CREATE TABLE IF NOT EXISTS activity_log (
    event_id        uuid PRIMARY KEY,
    global_position bigint      NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    event_type      text        NOT NULL,
    created_at      timestamptz NOT NULL
)`

// ActivityLogProjection records every event, whatever its type.
//
// The INSERT has no ON CONFLICT clause: a redelivered event would violate
// the primary key and stop the processor. It never happens, because each
// event's effect commits exactly once with the checkpoint.
type ActivityLogProjection struct{}

// Name identifies the projection's checkpoint.
func (*ActivityLogProjection) Name() string { return "activity_log" }

// Handle appends the event to activity_log.
func (*ActivityLogProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO activity_log (event_id, global_position, aggregate_type, aggregate_id, event_type, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		event.EventID, event.GlobalPosition, event.AggregateType, event.AggregateID, event.EventType, event.CreatedAt)
	return err
}
