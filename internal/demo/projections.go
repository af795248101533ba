package demo

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// Aggregate types of the demo domain.
const (
	AggregateUser  = "User"
	AggregateOrder = "Order"
)

// Event types of the demo domain. A user's stream starts with UserCreated;
// EmailVerified and UserDeactivated follow it, and nothing follows
// UserDeactivated. Every OrderPlaced is the one event of an Order aggregate.
const (
	EventUserCreated     = "UserCreated"
	EventEmailVerified   = "EmailVerified"
	EventUserDeactivated = "UserDeactivated"
	EventOrderPlaced     = "OrderPlaced"
)

// UserCreated is the payload of a "UserCreated" event.
type UserCreated struct {
	Email string `json:"email"`
}

// EmailVerified is the payload of an "EmailVerified" event.
type EmailVerified struct {
	Email string `json:"email"`
}

// UserDeactivated is the payload of a "UserDeactivated" event.
type UserDeactivated struct {
	Reason string `json:"reason,omitempty"`
}

// OrderPlaced is the payload of an "OrderPlaced" event.
type OrderPlaced struct {
	CustomerID  string `json:"customer_id"`
	AmountCents int64  `json:"amount_cents"`
}

// SchemaOwner is a projection that owns the tables of its read model.
type SchemaOwner interface {
	// Schema is the read model's DDL: CREATE ... IF NOT EXISTS statements,
	// safe to run again.
	Schema() string
}

// Projections returns the built-in demo projections, new instances each
// call: user_count, revenue and activity_log. Their names are their
// checkpoint identities. Each is a [SchemaOwner]; [EnsureSchema] creates
// their tables.
func Projections() []projection.Projection {
	return []projection.Projection{&UserCountProjection{}, &RevenueProjection{}, &ActivityLogProjection{}}
}

// UserStatsSchema creates the read model of [UserCountProjection].
const UserStatsSchema = `
CREATE TABLE IF NOT EXISTS user_stats (
    user_id    text PRIMARY KEY,
    email      text        NOT NULL,
    created_at timestamptz NOT NULL,
    active     boolean     NOT NULL DEFAULT true
)`

// UserCountProjection ("user_count") keeps one row per user in user_stats,
// as in the projections guide: UserCreated inserts the user,
// UserDeactivated marks it inactive.
//
// It is a [projection.ScopedProjection]: it only receives events of "User"
// aggregates, and the filter runs in SQL.
type UserCountProjection struct{}

// Name identifies the projection's checkpoint.
func (*UserCountProjection) Name() string { return "user_count" }

// Schema creates user_stats.
func (*UserCountProjection) Schema() string { return UserStatsSchema }

// AggregateTypes limits the projection to User events.
func (*UserCountProjection) AggregateTypes() []string { return []string{AggregateUser} }

// BoundedContexts accepts every bounded context.
func (*UserCountProjection) BoundedContexts() []string { return nil }

// Handle updates user_stats through the batch's transaction, so the write
// commits together with the checkpoint.
func (*UserCountProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	switch event.EventType {
	case EventUserCreated:
		var payload UserCreated
		if err := json.Unmarshal(event.Payload, &payload); err != nil {
			return fmt.Errorf("decoding UserCreated: %w", err)
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO user_stats (user_id, email, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (user_id) DO NOTHING`,
			event.AggregateID, payload.Email, event.CreatedAt)
		return err

	case EventUserDeactivated:
		_, err := tx.Exec(ctx, `UPDATE user_stats SET active = false WHERE user_id = $1`, event.AggregateID)
		return err
	}
	return nil
}

// RevenueSchema creates the read model of [RevenueProjection]: one row per
// partition key, so partitions never wait for each other's row locks. The
// total is the sum of the rows ([RevenueTotalSQL]).
const RevenueSchema = `
CREATE TABLE IF NOT EXISTS revenue (
    partition_key integer PRIMARY KEY,
    orders        bigint  NOT NULL,
    total_cents   bigint  NOT NULL
)`

// RevenueTotalSQL reads the revenue total: (orders, total_cents).
const RevenueTotalSQL = `SELECT coalesce(sum(orders), 0)::bigint, coalesce(sum(total_cents), 0)::bigint FROM revenue`

// RevenueProjection ("revenue") keeps the running total of all orders
// placed.
//
// Adding to a running total is deliberately not idempotent: applying an
// event twice would count it twice. It is correct here because the processor
// commits the write in the same transaction as the checkpoint, so every
// event's effect lands exactly once, across crashes and rescales. (A read
// model outside this database, or a Handle that writes through another
// connection, would not get that guarantee.)
//
// Each partition adds to its own row (keyed by the partition key of the
// batch, 0 when unpartitioned), so partitions never queue on one row lock;
// the total is the sum over the rows. After a rescale a key may belong to a
// partition of a newer generation; that partition adds to the same row,
// which is still exact because the sum does not care who added what.
type RevenueProjection struct{}

// Name identifies the projection's checkpoint.
func (*RevenueProjection) Name() string { return "revenue" }

// Schema creates revenue.
func (*RevenueProjection) Schema() string { return RevenueSchema }

// AggregateTypes limits the projection to Order events.
func (*RevenueProjection) AggregateTypes() []string { return []string{AggregateOrder} }

// BoundedContexts accepts every bounded context.
func (*RevenueProjection) BoundedContexts() []string { return nil }

// Handle adds each placed order to its partition's subtotal.
func (*RevenueProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	if event.EventType != EventOrderPlaced {
		return nil
	}
	var payload OrderPlaced
	if err := json.Unmarshal(event.Payload, &payload); err != nil {
		return fmt.Errorf("decoding OrderPlaced: %w", err)
	}
	key := 0
	if info, ok := projection.BatchInfoFromContext(ctx); ok {
		key = info.PartitionKey
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO revenue (partition_key, orders, total_cents) VALUES ($1, 1, $2)
		ON CONFLICT (partition_key) DO UPDATE
		SET orders = revenue.orders + 1, total_cents = revenue.total_cents + EXCLUDED.total_cents`,
		key, payload.AmountCents)
	return err
}

// ActivityLogSchema creates the read model of [ActivityLogProjection].
//
// seq numbers the rows in the order they were applied: one aggregate's
// events are applied one after another (in one partition, or across a
// rescale only once the earlier generation's batch has committed), so
// ordering an aggregate's rows by seq must give its versions in order.
// partition_key, total_partitions and generation say which partition of
// which topology applied the event; they are NULL for an event handled
// outside a processor's batch.
const ActivityLogSchema = `
CREATE TABLE IF NOT EXISTS activity_log (
    event_id          uuid PRIMARY KEY,
    seq               bigserial   NOT NULL UNIQUE,
    global_position   bigint      NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    aggregate_version bigint      NOT NULL,
    event_type        text        NOT NULL,
    created_at        timestamptz NOT NULL,
    partition_key     integer,
    total_partitions  integer,
    generation        bigint,
    applied_at        timestamptz NOT NULL DEFAULT clock_timestamp()
)`

// ActivityLogProjection ("activity_log") records every event, whatever its
// type, with the partition and topology generation that applied it and an
// applied-order sequence number: the read model that shows exactly-once,
// in-order delivery, or its failure.
//
// The INSERT has no ON CONFLICT clause on purpose: a redelivered event
// violates the primary key and stops the processor with an error naming the
// event. It never happens, because each event's effect commits exactly once
// with the checkpoint.
type ActivityLogProjection struct{}

// Name identifies the projection's checkpoint.
func (*ActivityLogProjection) Name() string { return "activity_log" }

// Schema creates activity_log.
func (*ActivityLogProjection) Schema() string { return ActivityLogSchema }

// Handle appends the event to activity_log.
func (*ActivityLogProjection) Handle(ctx context.Context, tx pgx.Tx, event *projection.PersistedEvent) error {
	var key, total *int
	var generation *int64
	if info, ok := projection.BatchInfoFromContext(ctx); ok {
		key, total, generation = &info.PartitionKey, &info.TotalPartitions, &info.Generation
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO activity_log (event_id, global_position, aggregate_type, aggregate_id, aggregate_version,
		                          event_type, created_at, partition_key, total_partitions, generation)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		event.EventID, event.GlobalPosition, event.AggregateType, event.AggregateID, event.AggregateVersion,
		event.EventType, event.CreatedAt, key, total, generation)
	if err != nil {
		return fmt.Errorf("recording event %s in activity_log: %w", event.EventID, err)
	}
	return nil
}
