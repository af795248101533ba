package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/internal/importer"
)

func (c *cli) importEvents(args []string) int {
	const name = "import"
	f := newFlags(commandHelp{
		name: name, args: "[flags]",
		description: `
Copies an existing event log, a table shaped like the projection guide's
(pupsourcing's) events table, into projectionist's events table (run
'projectionist migrate' first). Events are copied in the source's
global_position order, so every aggregate's events keep their order and
versions, with their event ids, payloads, metadata, created_at and
causation, correlation and trace ids. The guide's aggregate_heads table is
not needed: projectionist derives an aggregate's version from its events.

Each batch is copied in one transaction together with the import's
checkpoint (the table projection_imports): an import stopped at any point
(Ctrl-C, a crash, an event it cannot copy) resumes after the last batch it
committed when run again with the same flags. Events whose id is already
in events are skipped and counted. An event that cannot be copied (a
payload that is not JSON, a version held by another event in the target)
stops the import with an error naming its position and id; fix or remove
it in the source and run the command again.

The source table needs global_position, aggregate_type, aggregate_id,
aggregate_version, event_id, event_type and payload (bytea holding UTF-8
JSON, json, jsonb or text); event_version, metadata, created_at,
bounded_context, causation_id, correlation_id and trace_id are copied when
present. Stop writing to the source before the last run: an event that
commits behind the import's position is reported, not copied. Progress goes
to standard error, the summary to standard output.`,
		examples: `  # the guide's table in another database
  projectionist import --source-url 'postgres://app@old-db:5432/app' --progress 5s
  # the guide's table in schema pup of the events database
  projectionist import --source-table pup.events`,
	})
	dsnFlag := databaseURLFlag(f)
	sourceURL := f.String("source-url", "", "the source database's connection string (default: the target database, --database-url)")
	table := f.String("source-table", "events", "the source table, schema-qualified or found on the source's search_path")
	importName := f.String("name", "", "the checkpoint's name, to resume by (default: the source's host:port/database/schema.table)")
	batchSize := f.Int("batch-size", importer.DefaultBatchSize, fmt.Sprintf("events per transaction, between 1 and %d", importer.MaxBatchSize))
	progress := f.Duration("progress", 5*time.Second, "interval between progress lines on standard error; 0 for none")
	fromStart := f.Bool("from-start", false, "start again from the beginning of the source (events already imported are skipped)")
	if done, code := c.parse(f, args); done {
		return code
	}
	switch {
	case *batchSize < 1 || *batchSize > importer.MaxBatchSize:
		return c.fail(name, usagef("--batch-size is %d: must be between 1 and %d", *batchSize, importer.MaxBatchSize))
	case *progress < 0:
		return c.fail(name, usagef("--progress is %s: must not be negative", *progress))
	case *table == "":
		return c.fail(name, usagef("--source-table is empty"))
	}
	dsn, err := c.databaseURL(*dsnFlag)
	if err != nil {
		return c.fail(name, err)
	}
	c.redact = dbconn.NewRedactor(*dsnFlag, c.getenv("DATABASE_URL"), "password="+c.getenv("PGPASSWORD"), *sourceURL)

	target, err := c.connect(dsn, "projectionist-import", 2)
	if err != nil {
		return c.fail(name, err)
	}
	defer target.Close()
	source, srcDSN := target, dsn
	if *sourceURL != "" {
		srcDSN = connString{*sourceURL, "--source-url"}
		if source, err = c.connect(srcDSN, "projectionist-import", 2); err != nil {
			if ue := (*usageError)(nil); !errors.As(err, &ue) { // a malformed one names --source-url
				err = fmt.Errorf("source: %w", err)
			}
			return c.fail(name, err)
		}
		defer source.Close()
	}

	cfg := importer.Config{Source: source, Target: target, Table: *table, Location: location(srcDSN.dsn),
		Name: *importName, BatchSize: *batchSize, FromStart: *fromStart}
	pr := &progressPrinter{w: c.stderr, every: *progress}
	cfg.Progress = func(p importer.Progress) {
		if p.RunEvents == 0 { // the start
			if p.Resumed {
				fmt.Fprintf(c.stdout, "resuming import %s after source position %d (%d events imported, %d skipped)\n",
					p.Source, p.Position, p.Imported, p.Skipped)
			} else {
				fmt.Fprintf(c.stdout, "importing %s: %d events\n", p.Source, p.Total)
			}
		}
		pr.print(p)
	}
	res, err := importer.Run(c.ctx, cfg)
	if err != nil {
		if c.ctx.Err() != nil {
			err = fmt.Errorf("interrupted after source position %d (%d events imported, %d skipped): run the same command again to resume", res.Position, res.Imported, res.Skipped)
		} else if errors.Is(err, importer.ErrInvalidEvent) {
			err = fmt.Errorf("%w\nThe import stopped after source position %d (%d events imported, %d skipped); fix or delete the event in the source and run the same command again to resume", err, res.Position, res.Imported, res.Skipped)
		}
		return c.fail(name, withSchemaHint(err))
	}
	fmt.Fprintf(c.stdout, "import %s complete: %d events imported, %d skipped (already present), source position %d; this run: %d events in %s (%s events/s)\n",
		res.Source, res.Imported, res.Skipped, res.Position, res.RunEvents, res.Elapsed.Round(time.Millisecond), rate(res.RunEvents, res.Elapsed))
	return exitOK
}

// location is where dsn connects, without user or password:
// "host:port/database" ("" if it does not parse, which connecting has
// reported already).
func location(dsn string) string {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	cc := cfg.ConnConfig
	return net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))) + "/" + cc.Database
}

// progressPrinter prints a progress line at most every interval, e.g.
//
//	imported 50000 of 1000000 events (5.0%), 41000 events/s, source position 50000
type progressPrinter struct {
	w          io.Writer
	every      time.Duration
	last       time.Time
	lastEvents int64
}

func (pp *progressPrinter) print(p importer.Progress) {
	now := time.Now()
	if pp.last.IsZero() {
		pp.last = now
		return
	}
	if pp.every <= 0 || now.Sub(pp.last) < pp.every {
		return
	}
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done()) / float64(p.Total)
	}
	fmt.Fprintf(pp.w, "imported %d of %d events (%.1f%%), %s events/s, source position %d\n",
		p.Done(), p.Total, pct, rate(p.RunEvents-pp.lastEvents, now.Sub(pp.last)), p.Position)
	pp.last, pp.lastEvents = now, p.RunEvents
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/d.Seconds(), 'f', 0, 64)
}
