package importer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/importer"
	"github.com/projectionist/projectionist/internal/importer/importertest"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// guideDB returns a migrated database with the guide's events table in
// schema pup, holding n events over 4 aggregates.
func guideDB(t *testing.T, n int) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.NewPool(t)
	if _, err := projection.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	fillGuide(t, pool, n)
	return pool
}

// fillGuide creates the guide's events table in schema pup, holding n
// events over 4 aggregates.
func fillGuide(t *testing.T, db *pgxpool.Pool, n int) {
	t.Helper()
	q := importertest.GuideSchema("pup") + fmt.Sprintf(`
		INSERT INTO pup.events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
		SELECT 'User', 'user-' || (i %% 4), i / 4 + 1, gen_random_uuid(), 'Touched', convert_to('{"i": ' || i || '}', 'UTF8')
		FROM generate_series(0, %d - 1) AS i ORDER BY i;`, n)
	if _, err := db.Exec(t.Context(), q); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, db *pgxpool.Pool, q string) (n int64) {
	t.Helper()
	if err := db.QueryRow(t.Context(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Cancelled after three batches (Ctrl-C), the import keeps those three
// and no more; run again, it resumes after them and imports the rest once.
func TestCancelAndResume(t *testing.T) {
	pool := guideDB(t, 40)
	ctx, cancel := context.WithCancel(t.Context())
	cfg := importer.Config{Source: pool, Target: pool, Table: "pup.events", BatchSize: 4,
		Progress: func(p importer.Progress) {
			if p.RunEvents == 12 {
				cancel()
			}
		}}
	p, err := importer.Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) || p.Position != 12 || p.Imported != 12 {
		t.Fatalf("cancelled import: %+v, %v; want stopped at position 12 with 12 imported, context.Canceled", p, err)
	}
	if n := count(t, pool, "SELECT count(*) FROM events"); n != 12 {
		t.Errorf("%d events after the cancelled import, want 12", n)
	}
	if n := count(t, pool, "SELECT last_position FROM projection_imports"); n != 12 {
		t.Errorf("checkpoint at %d, want 12", n)
	}

	cfg.Progress = nil
	p, err = importer.Run(t.Context(), cfg)
	if err != nil || !p.Resumed || p.Position != 40 || p.Imported != 40 || p.Skipped != 0 || p.RunEvents != 28 {
		t.Fatalf("resumed import: %+v, %v; want 28 more, 40 imported up to position 40", p, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM events e JOIN pup.events s USING (event_id)
		WHERE e.aggregate_id = s.aggregate_id AND e.aggregate_version = s.aggregate_version AND e.global_position = s.global_position`); n != 40 {
		t.Errorf("%d events imported at their source position, want 40", n)
	}
}

// An event that commits behind the import's position after the import
// passed it (the source's sequence commits out of order) is reported, not
// silently left out; importing from the start picks it up.
func TestLateSourceEventIsReported(t *testing.T) {
	pool := guideDB(t, 10)
	// Position 5 "not yet committed" during the first import.
	if _, err := pool.Exec(t.Context(), "CREATE TABLE late AS SELECT * FROM pup.events WHERE global_position = 5; DELETE FROM pup.events WHERE global_position = 5"); err != nil {
		t.Fatal(err)
	}
	cfg := importer.Config{Source: pool, Target: pool, Table: "pup.events", BatchSize: 3}
	if p, err := importer.Run(t.Context(), cfg); err != nil || p.Imported != 9 || p.Position != 10 {
		t.Fatalf("first import: %+v, %v; want 9 imported up to position 10", p, err)
	}
	if _, err := pool.Exec(t.Context(), "INSERT INTO pup.events SELECT * FROM late"); err != nil {
		t.Fatal(err)
	}
	_, err := importer.Run(t.Context(), cfg)
	if !errors.Is(err, importer.ErrLateEvents) {
		t.Fatalf("import after a late commit: %v, want ErrLateEvents", err)
	}
	cfg.FromStart = true
	p, err := importer.Run(t.Context(), cfg)
	if err != nil || p.Imported != 1 || p.Skipped != 9 {
		t.Fatalf("import from the start: %+v, %v; want 1 imported, 9 skipped", p, err)
	}
	if n := count(t, pool, "SELECT count(*) FROM events"); n != 10 {
		t.Errorf("%d events, want 10", n)
	}
}

// With the roles of docs/least-privilege.sql: the operator's role imports
// (given SELECT on the source), a worker's cannot.
func TestImportWithOperatorRole(t *testing.T) {
	ctx := t.Context()
	db := pgtest.NewLeastPrivilege(t)
	op := pgtest.OpenPool(t, db.Login(t, "op", "projectionist_operator"))
	wk := pgtest.OpenPool(t, db.Login(t, "wk", "projectionist_worker"))
	if _, err := projection.Migrate(ctx, op); err != nil {
		t.Fatalf("migrating as the operator: %v", err)
	}
	db.Grant(t)
	fillGuide(t, db.Admin, 20)
	if _, err := db.Admin.Exec(ctx, "GRANT USAGE ON SCHEMA pup TO projectionist_operator, projectionist_worker; GRANT SELECT ON pup.events TO projectionist_operator, projectionist_worker"); err != nil {
		t.Fatal(err)
	}

	if _, err := importer.Run(ctx, importer.Config{Source: wk, Target: wk, Table: "pup.events"}); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("import as a worker: %v, want permission denied", err)
	}
	p, err := importer.Run(ctx, importer.Config{Source: op, Target: op, Table: "pup.events", BatchSize: 6})
	if err != nil || p.Imported != 20 {
		t.Fatalf("import as the operator: %+v, %v; want 20 imported", p, err)
	}
}

// A source of other column types, with only the required columns and a
// bounded context: jsonb and text payloads are taken as their text, the
// missing columns get the target's defaults.
func TestMinimalSourceOfOtherTypes(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.NewPool(t)
	if _, err := projection.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		CREATE SCHEMA other;
		CREATE TABLE other.log (global_position integer PRIMARY KEY, bounded_context varchar(50), aggregate_type text, aggregate_id text,
		    aggregate_version integer, event_id text, event_type text, payload jsonb);
		INSERT INTO other.log VALUES
		    (10, 'billing', 'Invoice', 'inv-1', 1, 'c0ffee00-0000-4000-8000-000000000001', 'Issued', '{"b": 2, "a": [1]}'),
		    (20, NULL, 'Invoice', 'inv-1', 2, 'C0FFEE00-0000-4000-8000-000000000002', 'Paid', '"just a string"')`); err != nil {
		t.Fatal(err)
	}
	p, err := importer.Run(ctx, importer.Config{Source: pool, Target: pool, Table: "other.log", Location: "here"})
	if err != nil || p.Imported != 2 || p.Position != 20 || p.Source != "here/other.log" {
		t.Fatalf("import: %+v, %v; want 2 imported up to position 20, source here/other.log", p, err)
	}
	rows, err := pool.Query(ctx, `SELECT bounded_context || '|' || event_id || '|' || event_version || '|' || payload::text || '|' || metadata::text
		|| '|' || (created_at > now() - interval '1 hour') || '|' || coalesce(trace_id, 'null') FROM events ORDER BY global_position`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`billing|c0ffee00-0000-4000-8000-000000000001|1|{"a": [1], "b": 2}|{}|true|null`,
		`|c0ffee00-0000-4000-8000-000000000002|1|"just a string"|{}|true|null`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("imported events (-want +got):\n%s", diff)
	}
}
