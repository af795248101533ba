// Package importer copies an existing event log, a table shaped like the
// projection guide's (pupsourcing's) events table, into projectionist's
// events table: `projectionist import`.
//
// Events are read from the source in batches in global_position order and
// each batch is inserted in one transaction together with the import's
// checkpoint (the table projection_imports, migration 0012), so that an
// import stopped at any point resumes after the last batch it committed,
// and inserted in source order, so that projectionist's global_position
// order is the source's and every aggregate's versions keep their order.
// Event ids are kept; an event whose id is already in events is skipped
// and counted.
//
// The package is internal: importing is an operation of the binary, not
// part of the library's API, and its options may change with the command.
package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/pkg/projection"
)

// DefaultBatchSize is the default of [Config.BatchSize].
const DefaultBatchSize = 5000

// MaxBatchSize bounds [Config.BatchSize]: a batch is held in memory and
// inserted in one statement.
const MaxBatchSize = 100000

// Config says what to import and where.
type Config struct {
	// Source is where the source table is read. Required; it may be Target.
	Source *pgxpool.Pool
	// Target holds projectionist's schema (migrated). Required.
	Target *pgxpool.Pool
	// Table is the source table, as SQL names it: "events",
	// "pup.events", `"Pup"."Events"`; unqualified names are looked up on
	// the source connection's search_path. Defaults to "events".
	Table string
	// Location says where Source is, without a password
	// ("host:port/database"); with the table's schema-qualified name it
	// makes the checkpoint's key unless Name is set. Defaults to "".
	Location string
	// Name is the checkpoint's key (projection_imports.source). Defaults
	// to Location + "/" + the table's schema-qualified name.
	Name string
	// BatchSize is how many events one transaction copies, between 1 and
	// MaxBatchSize. Defaults to DefaultBatchSize.
	BatchSize int
	// FromStart starts again from the beginning of the source, with the
	// checkpoint's counts reset; events already imported are skipped.
	// Defaults to false: resume after the checkpoint.
	FromStart bool
	// Progress, if set, is called after every committed batch and once
	// at the start, from the goroutine running Run. Defaults to none.
	Progress func(Progress)
}

// Progress is where an import stands.
type Progress struct {
	// Source is the checkpoint's key.
	Source string
	// Total is the number of events in the source when the run started
	// (count(*), exact).
	Total int64
	// Imported and Skipped count the events copied, and those left out
	// because their event id was already in events, since the import
	// started (over every run, unless FromStart).
	Imported, Skipped int64
	// Position is the source's global_position of the last event copied
	// or skipped.
	Position int64
	// RunEvents counts the events this run copied or skipped; Elapsed is
	// how long it has been running.
	RunEvents int64
	Elapsed   time.Duration
	// Resumed is true when this run carried on after an earlier one.
	Resumed bool
}

// Done is how many source events are behind the checkpoint.
func (p Progress) Done() int64 { return p.Imported + p.Skipped }

// ErrInvalidSource is matched by an error that says the source table
// cannot be imported: missing, or without a required column.
var ErrInvalidSource = errors.New("invalid import source")

// ErrInvalidEvent is matched by an [*EventError].
var ErrInvalidEvent = errors.New("invalid event in the import source")

// EventError is a source event that cannot be imported. Nothing of its
// batch was committed: the import resumes before it.
type EventError struct {
	// Position and EventID identify the event in the source.
	Position int64
	EventID  string
	// Aggregate is "type/id", Version its aggregate version.
	Aggregate string
	Version   int64
	// Problem says what is wrong.
	Problem string
}

func (e *EventError) Error() string {
	return fmt.Sprintf("event %s at source position %d (aggregate %s, version %d): %s",
		e.EventID, e.Position, e.Aggregate, e.Version, e.Problem)
}

// Is makes an EventError match ErrInvalidEvent.
func (e *EventError) Is(target error) bool { return target == ErrInvalidEvent }

// ErrLateEvents is matched by an error that says source events committed
// behind the import's position while it ran.
var ErrLateEvents = errors.New("source events committed behind the import")

func (c Config) withDefaults() Config {
	if c.Table == "" {
		c.Table = "events"
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Source == nil:
		return errors.New("importer: Config.Source is nil")
	case c.Target == nil:
		return errors.New("importer: Config.Target is nil")
	case c.BatchSize < 1 || c.BatchSize > MaxBatchSize:
		return fmt.Errorf("importer: Config.BatchSize is %d: must be between 1 and %d", c.BatchSize, MaxBatchSize)
	}
	return nil
}

// Run imports cfg's source into cfg's target, from the checkpoint (or the
// start) until a read finds no more events, and returns where the import
// stands. An import that reached the end is marked completed, after a
// check that no source event committed behind it ([ErrLateEvents]). A cancelled ctx stops it between two batches or
// rolls the current one back: nothing is lost, and a later Run resumes.
func Run(ctx context.Context, cfg Config) (Progress, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Progress{}, err
	}
	src, err := describeSource(ctx, cfg.Source, cfg.Table)
	if err != nil {
		return Progress{}, err
	}
	name := cfg.Name
	if name == "" {
		name = strings.TrimPrefix(cfg.Location+"/"+src.name, "/")
	}
	p := Progress{Source: name}
	if err := cfg.Source.QueryRow(ctx, "SELECT count(*) FROM "+src.ident).Scan(&p.Total); err != nil {
		return p, fmt.Errorf("counting the source's events: %w", err)
	}
	err = cfg.Target.QueryRow(ctx, startSQL, name, cfg.FromStart).Scan(&p.Position, &p.Imported, &p.Skipped)
	if err != nil {
		return p, fmt.Errorf("reading the import's checkpoint: %w", err)
	}
	p.Resumed = p.Position > 0
	start := time.Now()
	report := func() {
		if cfg.Progress != nil {
			p.Elapsed = time.Since(start)
			cfg.Progress(p)
		}
	}
	report()

	// The next batch is read while this one is inserted. A batch read is
	// handed over whole, or with the error that ended it, in order: an
	// event that cannot be imported stops the import after the batches
	// before it are committed, as if read one by one.
	rctx, stopReading := context.WithCancel(ctx)
	batches := readAhead(rctx, src, cfg.Source, p.Position, cfg.BatchSize)
	defer func() {
		// Returning with the reader stopped: its connection is back in
		// the pool, which the caller may close.
		stopReading()
		for range batches {
		}
	}()
	for r := range batches {
		if r.err != nil {
			return p, r.err
		}
		b := r.batch
		imported, err := insert(ctx, cfg.Target, name, p.Position, b)
		if err != nil {
			return p, err
		}
		p.Position = b.positions[b.len()-1]
		p.Imported += imported
		p.Skipped += int64(b.len()) - imported
		p.RunEvents += int64(b.len())
		r.done()
		report()
	}
	if err := ctx.Err(); err != nil {
		return p, err
	}

	// An event that committed after the import had read past its
	// position (the source's global_position is a sequence: it commits out
	// of order) was never read. Every event at or below the position has
	// been counted exactly once, so more of them in the source means some
	// were missed.
	var behind int64
	if err := cfg.Source.QueryRow(ctx, "SELECT count(*) FROM "+src.ident+" WHERE "+src.col("global_position")+" <= $1", p.Position).Scan(&behind); err != nil {
		return p, fmt.Errorf("counting the source's events: %w", err)
	}
	if missed := behind - p.Done(); missed > 0 {
		return p, fmt.Errorf("%w: %d source events at or below position %d were committed after the import had passed them "+
			"(something was appending to the source while it ran); stop the writers and run the import again from the start "+
			"(--from-start): the events already imported are skipped", ErrLateEvents, missed, p.Position)
	}
	if _, err := cfg.Target.Exec(ctx, "UPDATE projection_imports SET completed_at = now(), updated_at = now() WHERE source = $1", name); err != nil {
		return p, fmt.Errorf("recording the import's completion: %w", err)
	}
	p.Elapsed = time.Since(start)
	return p, nil
}

// readResult is a batch read, or why reading stopped.
type readResult struct {
	batch *batch
	err   error
	// done hands the batch back for reuse.
	done func()
}

// readAhead reads the source's batches after position in order, one
// ahead of the consumer, until the end of the source, an error, or ctx's
// end; the channel is closed after the last.
func readAhead(ctx context.Context, src source, db *pgxpool.Pool, position int64, size int) <-chan readResult {
	out := make(chan readResult)
	free := make(chan *batch, 2)
	free <- newBatch(size)
	free <- newBatch(size)
	go func() {
		defer close(out)
		for {
			var b *batch
			select {
			case b = <-free:
			case <-ctx.Done():
				return
			}
			err := src.read(ctx, db, position, size, b)
			if err == nil && b.len() == 0 {
				return
			}
			r := readResult{batch: b, err: err, done: func() { free <- b }}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			position = b.positions[b.len()-1]
		}
	}()
	return out
}

// startSQL creates the checkpoint, or resets it (from start), and clears
// its completion: this run may find more events.
const startSQL = `
INSERT INTO projection_imports AS i (source) VALUES ($1)
ON CONFLICT (source) DO UPDATE SET
    last_position   = CASE WHEN $2 THEN 0 ELSE i.last_position END,
    events_imported = CASE WHEN $2 THEN 0 ELSE i.events_imported END,
    events_skipped  = CASE WHEN $2 THEN 0 ELSE i.events_skipped END,
    started_at      = CASE WHEN $2 THEN now() ELSE i.started_at END,
    completed_at    = NULL,
    updated_at      = now()
RETURNING last_position, events_imported, events_skipped`

// column is a column the importer reads: its name in the source, whether
// it must be there, and the types it may have.
type column struct {
	name     string
	required bool
	// kind says how the column is read: as a number, text, a timestamp,
	// or JSON that may be stored as bytea, json, jsonb or text.
	kind kind
}

type kind int

const (
	kindInt kind = iota
	kindText
	kindTime
	kindJSON
)

// columns are read in this order; batch.scan follows it.
var columns = []column{
	{"global_position", true, kindInt},
	{"bounded_context", false, kindText},
	{"aggregate_type", true, kindText},
	{"aggregate_id", true, kindText},
	{"aggregate_version", true, kindInt},
	{"event_id", true, kindText},
	{"event_type", true, kindText},
	{"event_version", false, kindInt},
	{"payload", true, kindJSON},
	{"metadata", false, kindJSON},
	{"created_at", false, kindTime},
	{"causation_id", false, kindText},
	{"correlation_id", false, kindText},
	{"trace_id", false, kindText},
}

// source is a resolved source table.
type source struct {
	name  string // schema.table, for people
	ident string // quoted, for SQL
	query string // reads one batch after $1, at most $2 events
}

func (s source) col(name string) string { return pgx.Identifier{name}.Sanitize() }

// describeSource resolves table on the source and builds the query that
// reads it, or says what is missing.
func describeSource(ctx context.Context, db *pgxpool.Pool, table string) (source, error) {
	var schema, rel *string
	err := db.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, table).Scan(&schema, &rel)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && rel == nil) {
		return source{}, fmt.Errorf("%w: no table %q%s", ErrInvalidSource, table, candidateTables(ctx, db))
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) { // not a name: "a.b.c.d", "other_db.public.events"
		return source{}, fmt.Errorf("%w: no table %q (%s)%s", ErrInvalidSource, table, pgErr.Message, candidateTables(ctx, db))
	}
	if err != nil {
		return source{}, fmt.Errorf("looking up the source table %q: %w", table, err)
	}
	s := source{name: *schema + "." + *rel, ident: pgx.Identifier{*schema, *rel}.Sanitize()}

	rows, err := db.Query(ctx, `SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, s.ident)
	if err != nil {
		return source{}, fmt.Errorf("reading the source table's columns: %w", err)
	}
	type found struct{ typname, display string }
	have := map[string]found{}
	var names []string
	var n, typ, display string
	if _, err := pgx.ForEachRow(rows, []any{&n, &typ, &display}, func() error {
		have[n] = found{typ, display}
		names = append(names, n+" "+display)
		return nil
	}); err != nil {
		return source{}, fmt.Errorf("reading the source table's columns: %w", err)
	}
	if _, ok := have["partition_hash"]; ok {
		if _, ok := have["transaction_id"]; ok {
			return source{}, fmt.Errorf("%w: %s is projectionist's own events table (it has partition_hash and transaction_id); name the guide's table with --source-table, and its database with --source-url", ErrInvalidSource, s.name)
		}
	}

	var missing, wrong []string
	var exprs []string
	for _, c := range columns {
		f, ok := have[c.name]
		if !ok {
			if c.required {
				missing = append(missing, c.name)
			}
			exprs = append(exprs, absent(c))
			continue
		}
		e, ok := read(c, f.typname)
		if !ok {
			wrong = append(wrong, fmt.Sprintf("%s is %s (want %s)", c.name, f.display, want(c.kind)))
		}
		exprs = append(exprs, e)
	}
	if len(missing) > 0 || len(wrong) > 0 {
		var problems []string
		if len(missing) > 0 {
			problems = append(problems, "missing required columns "+strings.Join(missing, ", "))
		}
		problems = append(problems, wrong...)
		return source{}, fmt.Errorf("%w: table %s: %s; it has: %s", ErrInvalidSource, s.name, strings.Join(problems, "; "), strings.Join(names, ", "))
	}
	gp := s.col("global_position")
	s.query = "SELECT " + strings.Join(exprs, ", ") + " FROM " + s.ident + " WHERE " + gp + " > $1 ORDER BY " + gp + " LIMIT $2"
	return s, nil
}

// candidateTables lists the source's tables that look like event logs
// (global_position and aggregate_version columns), for an error that says
// a table is missing.
func candidateTables(ctx context.Context, db *pgxpool.Pool) string {
	rows, err := db.Query(ctx, `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.columns
		WHERE column_name IN ('global_position', 'aggregate_version') AND table_schema NOT IN ('pg_catalog', 'information_schema')
		GROUP BY table_schema, table_name HAVING count(*) = 2 ORDER BY 1`)
	if err != nil {
		return ""
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return ""
	}
	if len(tables) == 0 {
		return " (the database has no table with global_position and aggregate_version columns)"
	}
	return " (tables with global_position and aggregate_version columns: " + strings.Join(tables, ", ") + ")"
}

// read returns the select-list expression that reads c, stored as typname.
func read(c column, typname string) (string, bool) {
	id := pgx.Identifier{c.name}.Sanitize()
	switch c.kind {
	case kindInt:
		return id + "::bigint", slices.Contains([]string{"int2", "int4", "int8", "numeric"}, typname)
	case kindText:
		return id + "::text", slices.Contains([]string{"text", "varchar", "bpchar", "uuid", "name"}, typname)
	case kindTime:
		return id + "::timestamptz", typname == "timestamptz" || typname == "timestamp"
	case kindJSON:
		if typname == "bytea" {
			return id, true // checked for UTF-8 here
		}
		return "convert_to(" + id + "::text, 'UTF8')", slices.Contains([]string{"json", "jsonb", "text", "varchar"}, typname)
	}
	return "", false
}

// absent returns the expression that stands for c when the source has no
// such column: NULL, which the insert replaces by the target's default.
func absent(c column) string {
	switch c.kind {
	case kindInt:
		return "NULL::bigint"
	case kindTime:
		return "NULL::timestamptz"
	case kindJSON:
		return "NULL::bytea"
	}
	return "NULL::text"
}

func want(k kind) string {
	switch k {
	case kindInt:
		return "an integer"
	case kindText:
		return "text or uuid"
	case kindTime:
		return "timestamptz"
	}
	return "bytea, json, jsonb or text"
}

// batch holds one batch of source events, column by column, as the
// insert's arrays.
type batch struct {
	positions      []int64
	boundedContext []*string
	aggregateType  []string
	aggregateID    []string
	version        []int64
	eventID        []string
	eventType      []string
	eventVersion   []*int64
	payload        []string
	metadata       []*string
	createdAt      []*time.Time
	causation      []*string
	correlation    []*string
	trace          []*string
	hash           []int64
}

func newBatch(n int) *batch { return &batch{positions: make([]int64, 0, n)} }

func (b *batch) len() int { return len(b.positions) }

func (b *batch) reset() {
	*b = batch{positions: b.positions[:0], boundedContext: b.boundedContext[:0], aggregateType: b.aggregateType[:0],
		aggregateID: b.aggregateID[:0], version: b.version[:0], eventID: b.eventID[:0], eventType: b.eventType[:0],
		eventVersion: b.eventVersion[:0], payload: b.payload[:0], metadata: b.metadata[:0], createdAt: b.createdAt[:0],
		causation: b.causation[:0], correlation: b.correlation[:0], trace: b.trace[:0], hash: b.hash[:0]}
}

// read fills b with the events after position, at most limit, checking
// each. An event that cannot be imported is an *EventError.
func (s source) read(ctx context.Context, db *pgxpool.Pool, position int64, limit int, b *batch) error {
	b.reset()
	rows, err := db.Query(ctx, s.query, position, limit)
	if err != nil {
		return fmt.Errorf("reading the source after position %d: %w", position, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			gp, version               int64
			bc, aggType, aggID, evID  *string
			evType                    *string
			evVersion                 *int64
			payload, metadata         []byte
			createdAt                 *time.Time
			causation, correl, traceI *string
		)
		if err := rows.Scan(&gp, &bc, &aggType, &aggID, &version, &evID, &evType, &evVersion, &payload, &metadata,
			&createdAt, &causation, &correl, &traceI); err != nil {
			return fmt.Errorf("reading the source after position %d: %w", position, err)
		}
		ev := &EventError{Position: gp, EventID: deref(evID), Aggregate: deref(aggType) + "/" + deref(aggID), Version: version}
		if err := check(ev, bc, aggType, aggID, evID, evType, version, payload, metadata); err != nil {
			return err
		}
		id, _ := uuid.Parse(*evID)
		b.positions = append(b.positions, gp)
		b.boundedContext = append(b.boundedContext, bc)
		b.aggregateType = append(b.aggregateType, *aggType)
		b.aggregateID = append(b.aggregateID, *aggID)
		b.version = append(b.version, version)
		b.eventID = append(b.eventID, id.String())
		b.eventType = append(b.eventType, *evType)
		b.eventVersion = append(b.eventVersion, evVersion)
		b.payload = append(b.payload, string(payload))
		if metadata == nil {
			b.metadata = append(b.metadata, nil)
		} else {
			m := string(metadata)
			b.metadata = append(b.metadata, &m)
		}
		b.createdAt = append(b.createdAt, createdAt)
		b.causation = append(b.causation, causation)
		b.correlation = append(b.correlation, correl)
		b.trace = append(b.trace, traceI)
		b.hash = append(b.hash, int64(projection.PartitionHash(*aggID)))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the source after position %d: %w", position, err)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// check returns ev with its problem if the event cannot be stored in
// projectionist's events table, nil if it can.
func check(ev *EventError, bc, aggType, aggID, evID, evType *string, version int64, payload, metadata []byte) error {
	fail := func(format string, args ...any) error {
		ev.Problem = fmt.Sprintf(format, args...)
		return ev
	}
	for _, f := range []struct {
		name  string
		v     *string
		limit int
	}{
		{"bounded_context", bc, projection.MaxBoundedContextBytes},
		{"aggregate_type", aggType, projection.MaxAggregateTypeBytes},
		{"aggregate_id", aggID, projection.MaxAggregateIDBytes},
		{"event_type", evType, projection.MaxEventTypeBytes},
	} {
		switch {
		case f.v == nil && f.name != "bounded_context":
			return fail("%s is NULL", f.name)
		case f.v != nil && len(*f.v) > f.limit:
			return fail("%s is %d bytes long, over projectionist's limit of %d", f.name, len(*f.v), f.limit)
		}
	}
	if evID == nil {
		return fail("event_id is NULL")
	}
	if _, err := uuid.Parse(*evID); err != nil {
		return fail("event_id is not a UUID")
	}
	if version < 1 {
		return fail("aggregate_version is %d; projectionist's versions start at 1", version)
	}
	if payload == nil {
		return fail("payload is NULL")
	}
	if err := checkJSON(payload); err != nil {
		return fail("payload %v", err)
	}
	if metadata != nil {
		if err := checkJSON(metadata); err != nil {
			return fail("metadata %v", err)
		}
	}
	return nil
}

// checkJSON returns why b cannot be stored in a json column, or nil.
func checkJSON(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("is not UTF-8")
	}
	if json.Valid(b) {
		return nil
	}
	var v any
	err := json.Unmarshal(b, &v)
	if err == nil {
		err = errors.New("invalid")
	}
	return fmt.Errorf("is not valid JSON (%w)", err)
}

// insertSQL inserts a batch in source order (the identity is assigned in
// the ORDER BY's order), leaving out the events whose id is there already.
// partition_hash is computed in Go, so the trigger does not run.
const insertSQL = `
INSERT INTO events (bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type, event_version,
                    payload, metadata, created_at, causation_id, correlation_id, trace_id, partition_hash)
SELECT coalesce(bc, ''), at, aid, v, id, et, coalesce(ev, 1), p::json, coalesce(m, '{}')::json, coalesce(ca, now()), cau, cor, tr, h
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::uuid[], $6::text[], $7::int[], $8::text[], $9::text[],
            $10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::bigint[])
     WITH ORDINALITY AS u(bc, at, aid, v, id, et, ev, p, m, ca, cau, cor, tr, h, ord)
ORDER BY ord
ON CONFLICT (event_id) DO NOTHING`

// insert copies b into events and moves the checkpoint from after to b's
// last position, in one transaction, and returns how many events it
// inserted (the others were there already).
func insert(ctx context.Context, db *pgxpool.Pool, name string, after int64, b *batch) (int64, error) {
	last := b.positions[b.len()-1]
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("importing source positions %d to %d: %w", b.positions[0], last, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// The checkpoint first: its row lock makes a second import of the
	// same source wait here, and then find the checkpoint moved.
	tag, err := tx.Exec(ctx, "UPDATE projection_imports SET last_position = $3, updated_at = now() WHERE source = $1 AND last_position = $2",
		name, after, last)
	if err != nil {
		return 0, fmt.Errorf("moving the import's checkpoint: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return 0, fmt.Errorf("the checkpoint of import %q is no longer at source position %d: another import of the same source is running (or was reset); run one at a time", name, after)
	}
	tag, err = tx.Exec(ctx, insertSQL, b.boundedContext, b.aggregateType, b.aggregateID, b.version, b.eventID, b.eventType,
		b.eventVersion, b.payload, b.metadata, b.createdAt, b.causation, b.correlation, b.trace, b.hash)
	if err != nil {
		_ = tx.Rollback(ctx)
		return 0, explainInsert(ctx, db, b, err)
	}
	imported := tag.RowsAffected()
	if imported < int64(b.len()) {
		// Skipped events must be the same events, not others that
		// happen to share an id.
		var pos int64
		var at, aid string
		var v int64
		err := tx.QueryRow(ctx, mismatchSQL, b.eventID, b.positions, b.boundedContext, b.aggregateType, b.aggregateID, b.version).
			Scan(&pos, &at, &aid, &v)
		switch {
		case err == nil:
			i := slices.Index(b.positions, pos)
			return 0, &EventError{Position: pos, EventID: b.eventID[i], Aggregate: b.aggregateType[i] + "/" + b.aggregateID[i], Version: b.version[i],
				Problem: fmt.Sprintf("events already holds an event with this id, of aggregate %s/%s version %d: the logs disagree; nothing of this batch was imported", at, aid, v)}
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("comparing skipped events: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE projection_imports SET events_imported = events_imported + $2, events_skipped = events_skipped + $3 WHERE source = $1",
		name, imported, int64(b.len())-imported); err != nil {
		return 0, fmt.Errorf("moving the import's checkpoint: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("importing source positions %d to %d: %w", b.positions[0], last, err)
	}
	return imported, nil
}

// mismatchSQL finds the first event of a batch whose id is in events for
// another aggregate or version.
const mismatchSQL = `
SELECT u.pos, e.aggregate_type, e.aggregate_id, e.aggregate_version
FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[]) AS u(id, pos, bc, at, aid, v)
JOIN events e ON e.event_id = u.id
WHERE (e.bounded_context, e.aggregate_type, e.aggregate_id, e.aggregate_version) IS DISTINCT FROM (coalesce(u.bc, ''), u.at, u.aid, u.v)
ORDER BY u.pos LIMIT 1`

// conflictSQL finds the first event of a batch whose aggregate version is
// in events under another event id.
const conflictSQL = `
SELECT u.pos, e.event_id::text
FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[]) AS u(id, pos, bc, at, aid, v)
JOIN events e ON (e.bounded_context, e.aggregate_type, e.aggregate_id, e.aggregate_version) = (coalesce(u.bc, ''), u.at, u.aid, u.v)
WHERE e.event_id <> u.id
ORDER BY u.pos LIMIT 1`

// explainInsert turns the insert's failure into an error that names the
// event, where it can.
func explainInsert(ctx context.Context, db *pgxpool.Pool, b *batch, err error) error {
	first, last := b.positions[0], b.positions[b.len()-1]
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_aggregate_version_key" {
		var pos int64
		var other string
		if qerr := db.QueryRow(ctx, conflictSQL, b.eventID, b.positions, b.boundedContext, b.aggregateType, b.aggregateID, b.version).Scan(&pos, &other); qerr == nil {
			i := slices.Index(b.positions, pos)
			return &EventError{Position: pos, EventID: b.eventID[i], Aggregate: b.aggregateType[i] + "/" + b.aggregateID[i], Version: b.version[i],
				Problem: fmt.Sprintf("events already holds version %d of this aggregate as another event, %s: the target has events of its own for this aggregate; nothing of this batch was imported", b.version[i], other)}
		}
		return fmt.Errorf("importing source positions %d to %d: two events of the batch have the same aggregate and version (%s): %w", first, last, pgErr.Detail, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("importing source positions %d to %d: nothing of this batch was imported: %w", first, last, err)
}
