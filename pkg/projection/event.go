package projection

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Event is an event to append to an aggregate's stream.
type Event struct {
	// EventID identifies the event uniquely. Defaults to a new UUIDv7.
	EventID uuid.UUID
	// EventType names what happened, e.g. "UserCreated". Required.
	EventType string
	// EventVersion is the version of the payload's schema. Defaults to 1.
	EventVersion int
	// Payload is the event's body as JSON. Defaults to {}.
	Payload json.RawMessage
	// Metadata is free-form JSON (actor, tenant, ...). Defaults to {}.
	Metadata json.RawMessage
	// CausationID identifies what caused this event: the command or the
	// event it was written in response to. Optional ("" is stored as NULL).
	CausationID string
	// CorrelationID groups the events of one conversation or workflow,
	// across aggregates. Optional.
	CorrelationID string
	// TraceID is the distributed trace the event was written under (e.g.
	// the W3C trace id of the request), so a read model's update can be
	// followed back to the request. Optional.
	TraceID string
	// CreatedAt is when the event happened. Defaults to the appending
	// transaction's time.
	CreatedAt time.Time
}

// PersistedEvent is an event as stored in the log.
type PersistedEvent struct {
	// GlobalPosition is the event's position in the whole log, assigned at
	// insert time. Positions are unique and increasing in insert order,
	// but commit order can differ: see [Position].
	GlobalPosition int64
	// TransactionID is the id of the transaction that appended the event.
	TransactionID uint64
	// BoundedContext is the bounded context of the store that appended it.
	BoundedContext string
	// AggregateType is the aggregate's type, e.g. "User".
	AggregateType string
	// AggregateID identifies the aggregate within its type; partitions are
	// assigned by its FNV-1a hash.
	AggregateID string
	// AggregateVersion is the event's 1-based version within its aggregate.
	AggregateVersion int64
	// EventID identifies the event uniquely.
	EventID uuid.UUID
	// EventType names what happened.
	EventType string
	// EventVersion is the version of the payload's schema.
	EventVersion int
	// Payload is the event's body as JSON.
	Payload json.RawMessage
	// Metadata is the event's metadata as JSON.
	Metadata json.RawMessage
	// CausationID, CorrelationID and TraceID are as appended; "" when the
	// writer gave none (NULL in the table).
	CausationID   string
	CorrelationID string
	TraceID       string
	// CreatedAt is when the event happened.
	CreatedAt time.Time
}

// Position returns the event's place in the order projections read the log.
func (e *PersistedEvent) Position() Position {
	return Position{TransactionID: e.TransactionID, GlobalPosition: e.GlobalPosition}
}

// Position is a place in the log in the order projections read it: by the
// appending transaction's id, then by global position. Unlike the global
// position alone, this order never lets an event that commits late appear
// behind a reader that has already moved past it, provided readers stay below
// the horizon (the oldest transaction still in flight). The zero Position is
// before every event.
type Position struct {
	// TransactionID is the appending transaction's id.
	TransactionID uint64
	// GlobalPosition is the event's global position.
	GlobalPosition int64
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	if p.TransactionID != q.TransactionID {
		return p.TransactionID < q.TransactionID
	}
	return p.GlobalPosition < q.GlobalPosition
}

// String formats the position as "transaction/position".
func (p Position) String() string {
	return fmt.Sprintf("%d/%d", p.TransactionID, p.GlobalPosition)
}
