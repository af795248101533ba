// Package importertest holds the fixture the importer's tests and
// benchmarks share: the guide's (pupsourcing's) event store, the source
// `projectionist import` is written for.
package importertest

import "fmt"

// GuideSchema returns the SQL that creates the guide's event store (its
// events and aggregate_heads tables, as its migration generator writes
// them) in schema, and the schema if it does not exist yet.
func GuideSchema(schema string) string {
	return fmt.Sprintf(`
CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE %[1]s.events (
    global_position BIGSERIAL PRIMARY KEY,
    aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, aggregate_version BIGINT NOT NULL,
    event_id UUID NOT NULL UNIQUE, event_type TEXT NOT NULL, event_version INT NOT NULL DEFAULT 1,
    payload BYTEA NOT NULL, trace_id TEXT, correlation_id TEXT, causation_id TEXT, metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (aggregate_type, aggregate_id, aggregate_version));
CREATE TABLE %[1]s.aggregate_heads (aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, aggregate_version BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), PRIMARY KEY (aggregate_type, aggregate_id));`, schema)
}
