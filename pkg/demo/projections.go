package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
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
// their tables. Each is also a [projection.BatchProjection], writing a
// batch in one or two statements; its Handle writes the same read model
// one event at a time.
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

// HandleBatch makes UserCountProjection a [projection.BatchProjection]: the
// batch's writes in one round trip of two statements, to the same rows
// Handle would leave, event by event, whatever the order of the events.
//
// A user row that exists before the batch ignores UserCreated and is
// deactivated by any UserDeactivated, so one UPDATE covers every user
// deactivated in the batch. A user new in the batch is inserted by its
// first UserCreated (later ones do nothing, as ON CONFLICT DO NOTHING does
// for Handle), active unless a UserDeactivated follows that UserCreated in
// the batch; a UserDeactivated before it found no row to update. The UPDATE
// runs first, so it cannot touch the rows the INSERT adds.
func (*UserCountProjection) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	var (
		ids, emails []string
		createdAt   []time.Time
		active      []bool
		created     = map[string]int{} // user id -> index in the insert's columns
		deactivated []string
	)
	for i := range events {
		e := &events[i]
		switch e.EventType {
		case EventUserCreated:
			var payload UserCreated
			if err := json.Unmarshal(e.Payload, &payload); err != nil {
				return fmt.Errorf("decoding UserCreated: %w", err)
			}
			if _, ok := created[e.AggregateID]; ok {
				continue
			}
			created[e.AggregateID] = len(ids)
			ids, emails, createdAt, active = append(ids, e.AggregateID), append(emails, payload.Email), append(createdAt, e.CreatedAt), append(active, true)
		case EventUserDeactivated:
			deactivated = append(deactivated, e.AggregateID)
			if j, ok := created[e.AggregateID]; ok {
				active[j] = false
			}
		}
	}
	batch := &pgx.Batch{}
	if len(deactivated) > 0 {
		batch.Queue(`UPDATE user_stats SET active = false WHERE user_id = ANY($1::text[])`, deactivated)
	}
	if len(ids) > 0 {
		batch.Queue(`
			INSERT INTO user_stats (user_id, email, created_at, active)
			SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::boolean[])
			ON CONFLICT (user_id) DO NOTHING`,
			ids, emails, createdAt, active)
	}
	if batch.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, batch).Close()
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
	_, err := tx.Exec(ctx, addRevenueSQL, key, 1, payload.AmountCents)
	return err
}

// addRevenueSQL adds $2 orders of $3 cents in all to partition $1's row.
const addRevenueSQL = `
	INSERT INTO revenue (partition_key, orders, total_cents) VALUES ($1, $2, $3)
	ON CONFLICT (partition_key) DO UPDATE
	SET orders = revenue.orders + EXCLUDED.orders, total_cents = revenue.total_cents + EXCLUDED.total_cents`

// HandleBatch makes RevenueProjection a [projection.BatchProjection]: it
// sums the batch's orders in Go and adds them to the partition's row in one
// upsert, instead of one per order. The sum is what Handle would leave, as
// a sum does not depend on the order of its terms.
func (*RevenueProjection) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	var orders, cents int64
	for i := range events {
		e := &events[i]
		if e.EventType != EventOrderPlaced {
			continue
		}
		var payload OrderPlaced
		if err := json.Unmarshal(e.Payload, &payload); err != nil {
			return fmt.Errorf("decoding OrderPlaced: %w", err)
		}
		orders++
		cents += payload.AmountCents
	}
	if orders == 0 {
		return nil
	}
	key := 0
	if info, ok := projection.BatchInfoFromContext(ctx); ok {
		key = info.PartitionKey
	}
	_, err := tx.Exec(ctx, addRevenueSQL, key, orders, cents)
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

// HandleBatch makes ActivityLogProjection a [projection.BatchProjection]:
// the batch's rows in one INSERT from unnest, numbered by seq in the
// events' order, as Handle would number them one by one. A redelivered
// event still fails the whole INSERT on the primary key; the processor
// then runs the batch again one event at a time, so the error names it.
func (p *ActivityLogProjection) HandleBatch(ctx context.Context, tx pgx.Tx, events []projection.PersistedEvent) error {
	if len(events) == 1 {
		return p.Handle(ctx, tx, &events[0])
	}
	var key, total *int
	var generation *int64
	if info, ok := projection.BatchInfoFromContext(ctx); ok {
		key, total, generation = &info.PartitionKey, &info.TotalPartitions, &info.Generation
	}
	n := len(events)
	var (
		ids        = make([]uuid.UUID, n)
		positions  = make([]int64, n)
		aggTypes   = make([]string, n)
		aggIDs     = make([]string, n)
		versions   = make([]int64, n)
		eventTypes = make([]string, n)
		createdAt  = make([]time.Time, n)
	)
	for i := range events {
		e := &events[i]
		ids[i], positions[i], aggTypes[i], aggIDs[i] = e.EventID, e.GlobalPosition, e.AggregateType, e.AggregateID
		versions[i], eventTypes[i], createdAt[i] = e.AggregateVersion, e.EventType, e.CreatedAt
	}
	// ORDER BY the ordinality: seq's nextval is taken row by row in this
	// order.
	_, err := tx.Exec(ctx, `
		INSERT INTO activity_log (event_id, global_position, aggregate_type, aggregate_id, aggregate_version,
		                          event_type, created_at, partition_key, total_partitions, generation)
		SELECT e.id, e.pos, e.agg_type, e.agg_id, e.version, e.type, e.created_at, $8, $9, $10
		FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::timestamptz[])
		     WITH ORDINALITY AS e(id, pos, agg_type, agg_id, version, type, created_at, ord)
		ORDER BY e.ord`,
		ids, positions, aggTypes, aggIDs, versions, eventTypes, createdAt, key, total, generation)
	if err != nil {
		return fmt.Errorf("recording %d events (positions %d to %d) in activity_log: %w", n, positions[0], positions[n-1], err)
	}
	return nil
}
