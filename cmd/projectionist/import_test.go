package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/importer/importertest"
	"github.com/projectionist/projectionist/internal/pgtest"
	"github.com/projectionist/projectionist/pkg/projection"
)

// guideEvent is a row of the guide's events table, or of projectionist's
// read back for comparison (metadata as text, NULL there as '{}').
type guideEvent struct {
	Position                      int64
	AggregateType, AggregateID    string
	Version                       int64
	EventID                       uuid.UUID
	EventType                     string
	EventVersion                  int
	Payload                       string
	Trace, Correlation, Causation *string
	Metadata                      string
	CreatedAt                     time.Time
}

// fillGuide appends n events to schema's guide table, round-robin over a
// few aggregates (one with a unicode id), as the guide's store would: the
// next version of the aggregate, its head updated. Every third event has
// no trace, correlation or causation id and no metadata. It returns the
// events as written, in global_position order.
func fillGuide(t *testing.T, db *pgxpool.Pool, schema string, n int) []guideEvent {
	t.Helper()
	ctx := t.Context()
	if _, err := db.Exec(ctx, importertest.GuideSchema(schema)); err != nil {
		t.Fatal(err)
	}
	aggregates := []struct{ typ, id string }{
		{"User", "user-1"}, {"User", "ünïcødé-ид-用户-🚀"}, {"Order", "order-7"}, {"User", "user-2"}, {"Order", "o'quote \"dq\""},
	}
	versions := map[int]int64{}
	base := time.Date(2024, 3, 1, 12, 0, 0, 123456000, time.UTC)
	for i := range n {
		a := i % len(aggregates)
		// Not strictly round robin: aggregate 0 gets every seventh event
		// too, so that streams interleave unevenly.
		if i%7 == 3 {
			a = 0
		}
		versions[a]++
		var trace, corr, caus, meta any
		if i%3 != 0 {
			trace, corr, caus = fmt.Sprintf("trace-%d", i), fmt.Sprintf("corr-%d", i/4), uuid.NewString()
			meta = fmt.Sprintf(`{"user_agent": "test/%d", "tags": ["a", "ü"]}`, i)
		}
		payload := fmt.Sprintf(`{"n": %d, "name": "é-%d", "nested": {"ok": true}}`, i, i)
		_, err := db.Exec(ctx, fmt.Sprintf(`
			WITH e AS (
				INSERT INTO %[1]s.events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, event_version,
				                          payload, trace_id, correlation_id, causation_id, metadata, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, convert_to($7, 'UTF8'), $8, $9, $10, $11::jsonb, $12)
				RETURNING aggregate_type, aggregate_id, aggregate_version)
			INSERT INTO %[1]s.aggregate_heads (aggregate_type, aggregate_id, aggregate_version)
			SELECT * FROM e ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET aggregate_version = excluded.aggregate_version`, schema),
			aggregates[a].typ, aggregates[a].id, versions[a], uuid.New(), []string{"Created", "Renamed", "Touched"}[i%3], 1+i%2,
			payload, trace, corr, caus, meta, base.Add(time.Duration(i)*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
	}
	return readEvents(t, db, fmt.Sprintf(`SELECT global_position, aggregate_type, aggregate_id, aggregate_version, event_id,
		event_type, event_version, convert_from(payload, 'UTF8'), trace_id, correlation_id, causation_id,
		coalesce(metadata::text, '{}'), created_at FROM %s.events ORDER BY global_position`, schema))
}

// importedEvents reads projectionist's events in global_position order,
// as guideEvents.
func importedEvents(t *testing.T, db *pgxpool.Pool) []guideEvent {
	t.Helper()
	return readEvents(t, db, `SELECT global_position, aggregate_type, aggregate_id, aggregate_version, event_id,
		event_type, event_version, payload::text, trace_id, correlation_id, causation_id,
		metadata::text, created_at FROM public.events ORDER BY global_position`)
}

func readEvents(t *testing.T, db *pgxpool.Pool, query string) []guideEvent {
	t.Helper()
	rows, err := db.Query(t.Context(), query)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (e guideEvent, err error) {
		err = r.Scan(&e.Position, &e.AggregateType, &e.AggregateID, &e.Version, &e.EventID, &e.EventType, &e.EventVersion,
			&e.Payload, &e.Trace, &e.Correlation, &e.Causation, &e.Metadata, &e.CreatedAt)
		e.CreatedAt = e.CreatedAt.UTC()
		return e, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// sameEvents compares what was imported with the source: the same events
// in the same order, positions aside. Metadata is compared as JSON (the
// guide's is jsonb, which normalizes its text the same on both sides).
func sameEvents(t *testing.T, got, want []guideEvent) {
	t.Helper()
	strip := func(evs []guideEvent) []guideEvent {
		out := make([]guideEvent, len(evs))
		for i, e := range evs {
			e.Position = 0
			var m any
			if err := json.Unmarshal([]byte(e.Metadata), &m); err != nil {
				t.Fatalf("metadata of %s: %v", e.EventID, err)
			}
			b, _ := json.Marshal(m)
			e.Metadata = string(b)
			out[i] = e
		}
		return out
	}
	if diff := cmp.Diff(strip(want), strip(got)); diff != "" {
		t.Errorf("imported events differ from the source's, in order (-source +imported):\n%s", diff)
	}
}

// checkpoint is a row of projection_imports.
type checkpoint struct {
	Position, Imported, Skipped int64
	Completed                   bool
}

func readCheckpoint(t *testing.T, db *pgxpool.Pool) checkpoint {
	t.Helper()
	var c checkpoint
	err := db.QueryRow(t.Context(), `SELECT last_position, events_imported, events_skipped, completed_at IS NOT NULL FROM projection_imports`).
		Scan(&c.Position, &c.Imported, &c.Skipped, &c.Completed)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// seenProjection records every event it handles; a second application of
// one event fails on the primary key.
type seenProjection struct{}

func (seenProjection) Name() string { return "import_seen" }
func (seenProjection) Handle(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	_, err := tx.Exec(ctx, "INSERT INTO import_seen (event_id, aggregate_id, aggregate_version) VALUES ($1, $2, $3)",
		e.EventID, e.AggregateID, e.AggregateVersion)
	return err
}

// From a separate database: every event once, in the source's order, with
// everything the guide's table holds; a projection partitioned in 3 applies
// each exactly once; running again imports nothing.
func TestImportFromAnotherDatabase(t *testing.T) {
	ctx := t.Context()
	srcDSN := pgtest.NewDatabase(t)
	dstDSN, env := migratedDatabase(t)
	src := pgtest.OpenPool(t, srcDSN)
	dst := pgtest.OpenPool(t, dstDSN)
	want := fillGuide(t, src, "public", 103)

	r := run(t, env, "import", "--source-url", srcDSN, "--batch-size", "10", "--progress", "0")
	if r.code != 0 || !regexp.MustCompile(`(?m)^importing .*/public\.events: 103 events\n`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^import .*/public\.events complete: 103 events imported, 0 skipped \(already present\), source position 103; this run: 103 events in `).MatchString(r.stdout) {
		t.Fatalf("import:\n%s", r)
	}
	got := importedEvents(t, dst)
	sameEvents(t, got, want)
	if c := readCheckpoint(t, dst); c != (checkpoint{103, 103, 0, true}) {
		t.Errorf("checkpoint %+v, want 103 imported up to position 103, completed", c)
	}
	var bad int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM (SELECT aggregate_version, lag(aggregate_version) OVER w AS prev
		FROM events WINDOW w AS (PARTITION BY aggregate_type, aggregate_id ORDER BY global_position)) v
		WHERE aggregate_version <> coalesce(prev, 0) + 1`).Scan(&bad); err != nil || bad != 0 {
		t.Errorf("%d events whose version does not follow their aggregate's previous one in global_position order (%v)", bad, err)
	}
	var hashes int
	if err := dst.QueryRow(ctx, "SELECT count(*) FROM events WHERE partition_hash <> projection_partition_hash(aggregate_id)").Scan(&hashes); err != nil || hashes != 0 {
		t.Errorf("%d events with a partition_hash other than SQL's (%v)", hashes, err)
	}

	// A projection in three partitions applies every event once.
	if _, err := dst.Exec(ctx, "CREATE TABLE import_seen (event_id uuid PRIMARY KEY, aggregate_id text, aggregate_version bigint)"); err != nil {
		t.Fatal(err)
	}
	for key := range 3 {
		p := projection.NewProcessor(dst, nil, projection.ProcessorConfig{PartitionKey: key, TotalPartitions: 3, BatchSize: 7})
		if err := p.CatchUp(ctx, seenProjection{}); err != nil {
			t.Fatalf("partition %d: %v", key, err)
		}
	}
	var seen, matching int
	if err := dst.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE e.aggregate_id = s.aggregate_id AND e.aggregate_version = s.aggregate_version)
		FROM import_seen s JOIN events e USING (event_id)`).Scan(&seen, &matching); err != nil || seen != 103 || matching != 103 {
		t.Errorf("the projection applied %d events (%d matching), want 103 (%v)", seen, matching, err)
	}

	// Again: nothing to do.
	r = run(t, env, "import", "--source-url", srcDSN, "--progress", "0")
	if r.code != 0 || !strings.Contains(r.stdout, "after source position 103 (103 events imported, 0 skipped)\n") ||
		!strings.Contains(r.stdout, "complete: 103 events imported, 0 skipped (already present), source position 103; this run: 0 events in ") {
		t.Fatalf("import again:\n%s", r)
	}
	if n := len(importedEvents(t, dst)); n != 103 {
		t.Errorf("%d events after importing again, want 103", n)
	}
}

// From another schema of the same database, with a poison payload in the
// middle: the import stops before it, naming it, with every batch before
// it committed; once the row is fixed, it resumes from the checkpoint and
// finishes with no event twice. From the start again, every event is
// skipped.
func TestImportResumesAfterPoisonEvent(t *testing.T) {
	ctx := t.Context()
	dsn, env := migratedDatabase(t)
	db := pgtest.OpenPool(t, dsn)
	fillGuide(t, db, "pup", 50)
	var poisonID string
	if err := db.QueryRow(ctx, `UPDATE pup.events SET payload = convert_to('{"n": 23, oops', 'UTF8') WHERE global_position = 23
		RETURNING event_id::text`).Scan(&poisonID); err != nil {
		t.Fatal(err)
	}

	args := []string{"import", "--source-table", "pup.events", "--batch-size", "5", "--progress", "1ns"}
	r := run(t, env, args...)
	if r.code != 1 || !strings.Contains(r.stderr, "event "+poisonID+" at source position 23 (aggregate ") ||
		!strings.Contains(r.stderr, "payload is not valid JSON") ||
		!strings.Contains(r.stderr, "The import stopped after source position 20 (20 events imported, 0 skipped); fix or delete the event") {
		t.Fatalf("import with a poison event: want exit 1 naming it\n%s", r)
	}
	if !strings.Contains(r.stderr, "imported 20 of 50 events (40.0%), ") {
		t.Errorf("no progress line for the fourth batch:\n%s", r)
	}
	if c := readCheckpoint(t, db); c != (checkpoint{20, 20, 0, false}) {
		t.Errorf("checkpoint after the poison event %+v, want 20 imported up to position 20", c)
	}
	if n := len(importedEvents(t, db)); n != 20 {
		t.Errorf("%d events imported before the poison event, want 20", n)
	}

	if _, err := db.Exec(ctx, `UPDATE pup.events SET payload = convert_to('{"n": 23, "fixed": true}', 'UTF8') WHERE global_position = 23`); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, args...)
	if r.code != 0 || !strings.Contains(r.stdout, "resuming import ") ||
		!strings.Contains(r.stdout, "/pup.events after source position 20 (20 events imported, 0 skipped)\n") ||
		!strings.Contains(r.stdout, "complete: 50 events imported, 0 skipped (already present), source position 50; this run: 30 events in ") {
		t.Fatalf("import after fixing the event:\n%s", r)
	}
	want := readEvents(t, db, `SELECT global_position, aggregate_type, aggregate_id, aggregate_version, event_id,
		event_type, event_version, convert_from(payload, 'UTF8'), trace_id, correlation_id, causation_id,
		coalesce(metadata::text, '{}'), created_at FROM pup.events ORDER BY global_position`)
	sameEvents(t, importedEvents(t, db), want)
	if c := readCheckpoint(t, db); c != (checkpoint{50, 50, 0, true}) {
		t.Errorf("checkpoint %+v, want 50 imported up to position 50, completed", c)
	}

	r = run(t, env, append(args, "--from-start")...)
	if r.code != 0 || !strings.Contains(r.stdout, "complete: 0 events imported, 50 skipped (already present), source position 50; this run: 50 events in ") {
		t.Fatalf("import from the start:\n%s", r)
	}
	if n := len(importedEvents(t, db)); n != 50 {
		t.Errorf("%d events after importing from the start, want 50", n)
	}
	if c := readCheckpoint(t, db); c != (checkpoint{50, 0, 50, true}) {
		t.Errorf("checkpoint %+v, want 50 skipped up to position 50, completed", c)
	}
}

// A target that already holds another event at an aggregate's version
// stops the import, naming the aggregate, the version and both events,
// with nothing of the batch committed.
func TestImportVersionConflict(t *testing.T) {
	ctx := t.Context()
	dsn, env := migratedDatabase(t)
	db := pgtest.OpenPool(t, dsn)
	evs := fillGuide(t, db, "pup", 12)
	// The target's own order-7, version 2 (the source's is event 8).
	var ours string
	if err := db.QueryRow(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
		VALUES ('Order', 'order-7', 2, gen_random_uuid(), 'Other', '{}') RETURNING event_id::text`).Scan(&ours); err != nil {
		t.Fatal(err)
	}
	var theirs guideEvent
	for _, e := range evs {
		if e.AggregateID == "order-7" && e.Version == 2 {
			theirs = e
		}
	}
	r := run(t, env, "import", "--source-table", "pup.events", "--batch-size", "5", "--progress", "0")
	want := fmt.Sprintf("event %s at source position %d (aggregate Order/order-7, version 2): events already holds version 2 of this aggregate as another event, %s",
		theirs.EventID, theirs.Position, ours)
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("import onto a conflicting event: want exit 1 and %q\n%s", want, r)
	}
	// Batches before the one holding it are in; none of its.
	before := (theirs.Position - 1) / 5 * 5
	if c := readCheckpoint(t, db); c != (checkpoint{before, before, 0, false}) {
		t.Errorf("checkpoint %+v, want %d imported", c, before)
	}
	if n := len(importedEvents(t, db)); int64(n) != before+1 {
		t.Errorf("%d events, want the %d imported and ours", n, before)
	}
}

// Bad flags and sources: usage errors exit 2, sources that cannot be
// imported 1, with what was found; no password is printed.
func TestImportBadInput(t *testing.T) {
	ctx := t.Context()
	dsn, env := migratedDatabase(t)
	db := pgtest.OpenPool(t, dsn)
	fillGuide(t, db, "pup", 1)
	if _, err := db.Exec(ctx, `CREATE TABLE pup.thin (global_position bigint, aggregate_id text, payload text)`); err != nil {
		t.Fatal(err)
	}
	testBadInput(t, []badInput{
		{"no database", nil, []string{"import"}, 2, "projectionist import: no database: set DATABASE_URL"},
		{"zero batch", env, []string{"import", "--batch-size", "0"}, 2, "projectionist import: --batch-size is 0: must be between 1 and 100000"},
		{"huge batch", env, []string{"import", "--batch-size", "1000000"}, 2, "--batch-size is 1000000"},
		{"negative progress", env, []string{"import", "--progress", "-1s"}, 2, "--progress is -1s: must not be negative"},
		{"extra argument", env, []string{"import", "pup.events"}, 2, `projectionist import: unexpected argument "pup.events"`},
		{"own events table", env, []string{"import"}, 1, "public.events is projectionist's own events table"},
		{"missing table", env, []string{"import", "--source-table", "pup.nope"}, 1,
			`invalid import source: no table "pup.nope" (tables with global_position and aggregate_version columns: public.events, pup.events)`},
		{"missing columns", env, []string{"import", "--source-table", "pup.thin"}, 1,
			"invalid import source: table pup.thin: missing required columns aggregate_type, aggregate_version, event_id, event_type; it has: global_position bigint, aggregate_id text, payload text"},
		{"unreachable source", env, []string{"import", "--source-url", "postgres://app:" + secret + "@127.0.0.1:1/app?sslmode=disable"}, 1,
			"projectionist import: source: connecting to the database: "},
		{"malformed source", env, []string{"import", "--source-url", "host=127.0.0.1 port=x password=" + secret}, 2,
			"projectionist import: --source-url: invalid database connection string: invalid port"},
	})
	if r := run(t, nil, "import", "--help"); r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: projectionist import [flags]") ||
		!strings.Contains(r.stdout, "  --source-url ") || !strings.Contains(r.stdout, "\nExamples:\n") {
		t.Errorf("import --help:\n%s", r)
	}
}
