package projection_test

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projectionist/projectionist/pkg/projection"
)

// incompressible returns n bytes of random ASCII, which PostgreSQL cannot
// compress below the index's limit.
func incompressible(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)[:n]
}

// Append refuses a field PostgreSQL cannot store or index with a
// FieldError naming it, its size and the limit, and writes nothing.
func TestAppendRejectsUnstorableFields(t *testing.T) {
	pool := newPool(t)
	for _, tc := range []struct {
		name                    string
		boundedContext, typ, id string
		eventType               string
		field                   string
		size, limit             int
		want                    string
	}{
		{"long id", "", "user", incompressible(10000), "Created", "aggregate id", 10000, projection.MaxAggregateIDBytes,
			"invalid event: aggregate id is too long: 10000 bytes, the most is 2048"},
		{"NUL in id", "", "user", "us\x00er", "Created", "aggregate id", 5, projection.MaxAggregateIDBytes,
			"invalid event: aggregate id holds a NUL byte at byte 2: 5 bytes, the most is 2048"},
		{"invalid UTF-8 in id", "", "user", "user-\xff", "Created", "aggregate id", 6, projection.MaxAggregateIDBytes,
			"invalid event: aggregate id is not valid UTF-8 at byte 5: 6 bytes, the most is 2048"},
		{"long type", "", strings.Repeat("t", 256), "u-1", "Created", "aggregate type", 256, projection.MaxAggregateTypeBytes,
			"invalid event: aggregate type is too long: 256 bytes, the most is 255"},
		{"invalid UTF-8 in event type", "", "user", "u-1", "Cr\xc3eated", "event type", 8, projection.MaxEventTypeBytes,
			"invalid event: event type of event 0 is not valid UTF-8 at byte 2: 8 bytes, the most is 255"},
		{"long bounded context", strings.Repeat("b", 300), "user", "u-1", "Created", "bounded context", 300, projection.MaxBoundedContextBytes,
			"invalid event: bounded context is too long: 300 bytes, the most is 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := projection.NewStore(projection.WithBoundedContext(tc.boundedContext))
			_, err := store.Append(t.Context(), pool, tc.typ, tc.id, projection.AnyVersion, projection.Event{EventType: tc.eventType})
			var fe *projection.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, projection.ErrInvalidEvent) {
				t.Fatalf("Append = %v, want a *FieldError", err)
			}
			if fe.Field != tc.field || fe.Size != tc.size || fe.Limit != tc.limit || err.Error() != tc.want {
				t.Errorf("Append = %q (%+v), want %q", err, *fe, tc.want)
			}
		})
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM events"); n != 0 {
		t.Errorf("%d events written", n)
	}

	// At the limits, incompressible, the unique index takes it.
	store := projection.NewStore(projection.WithBoundedContext(incompressible(projection.MaxBoundedContextBytes)))
	if _, err := store.Append(t.Context(), pool, incompressible(projection.MaxAggregateTypeBytes), incompressible(projection.MaxAggregateIDBytes),
		projection.AnyVersion, projection.Event{EventType: incompressible(projection.MaxEventTypeBytes)}); err != nil {
		t.Errorf("Append at the limits: %v", err)
	}
}

// A writer appending with SQL gets the schema's named CHECK constraint.
func TestSQLWriterGetsNamedConstraint(t *testing.T) {
	pool := newPool(t)
	for _, tc := range []struct{ column, value, constraint string }{
		{"aggregate_id", incompressible(3000), "events_aggregate_id_size"},
		{"aggregate_type", incompressible(256), "events_aggregate_type_size"},
		{"event_type", incompressible(256), "events_event_type_size"},
		{"bounded_context", incompressible(256), "events_bounded_context_size"},
	} {
		row := map[string]string{"aggregate_id": "a-1", "aggregate_type": "thing", "event_type": "Happened", "bounded_context": ""}
		row[tc.column] = tc.value
		_, err := pool.Exec(t.Context(), `INSERT INTO events (bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload, partition_hash)
			VALUES ($1, $2, $3, 1, gen_random_uuid(), $4, '{}', 0)`,
			row["bounded_context"], row["aggregate_type"], row["aggregate_id"], row["event_type"])
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23514" || pgErr.ConstraintName != tc.constraint {
			t.Errorf("INSERT with a long %s = %v, want a violation of %s", tc.column, err, tc.constraint)
		}
	}
}
