package projection

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// Advisory lock class ids (the first half of PostgreSQL's two-int advisory
// lock key), so our locks cannot collide with each other.
const (
	lockClassMigrate int32 = 0x70726a00 // "prj\0"
	lockClassAppend  int32 = 0x70726a01
)

// Migration is one embedded schema migration.
type Migration struct {
	// Version is the migration's number, from its file name.
	Version int
	// Name is the file name, e.g. "0001_events_and_checkpoints.up.sql".
	Name string
	// SQL is the migration's text.
	SQL string
}

// Migrations returns the embedded migrations in the order they apply.
func Migrations() ([]Migration, error) {
	entries, err := fs.Glob(migrationFiles, "migrations/*.up.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, path := range entries {
		name := strings.TrimPrefix(path, "migrations/")
		num, _, ok := strings.Cut(name, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil || version < 1 {
			return nil, fmt.Errorf("migration %q: name must start with a positive number and an underscore", name)
		}
		text, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: version, Name: name, SQL: string(text)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %q and %q share version %d", ms[i-1].Name, ms[i].Name, ms[i].Version)
		}
	}
	return ms, nil
}

// Migrate brings the schema up to date and returns the migrations it
// applied. It runs in one transaction under an advisory lock, so any number of
// processes may call it at once: one applies the pending migrations, the
// others wait and then find nothing to do. Calling it on an up-to-date schema
// is a no-op.
//
// An up-to-date schema is recognized without the lock or any DDL, so a
// role that may only read the migrations table (a worker's: see
// docs/least-privilege.sql) can call it too.
func Migrate(ctx context.Context, db DBTX) ([]Migration, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	if current, err := upToDate(ctx, db, ms); err != nil || current {
		return nil, err
	}
	var applied []Migration
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var version int
		if err := tx.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
			return fmt.Errorf("reading the server's version: %w", err)
		}
		if err := checkServerVersion(version); err != nil {
			return err
		}
		// The tables go into the first schema of the search_path that
		// exists (a DSN's search_path=NAME puts them into NAME): with none,
		// CREATE TABLE would fail with "no schema has been selected".
		var schema *string
		var searchPath string
		if err := tx.QueryRow(ctx, "SELECT current_schema(), current_setting('search_path')").Scan(&schema, &searchPath); err != nil {
			return fmt.Errorf("reading the search_path: %w", err)
		}
		if schema == nil {
			return fmt.Errorf("the search_path (%s) names no schema that exists, so there is none to create projectionist's tables in: "+
				"create it first (CREATE SCHEMA ...), or fix the connection string's search_path", searchPath)
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 0)", lockClassMigrate); err != nil {
			return fmt.Errorf("taking migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS projectionist_schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("creating migrations table: %w", err)
		}
		done := map[int]bool{}
		rows, err := tx.Query(ctx, "SELECT version FROM projectionist_schema_migrations")
		if err != nil {
			return fmt.Errorf("reading applied migrations: %w", err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("reading applied migrations: %w", err)
		}
		for _, v := range versions {
			done[int(v)] = true
		}
		for _, m := range ms {
			if done[m.Version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("applying migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO projectionist_schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
				return fmt.Errorf("recording migration %s: %w", m.Name, err)
			}
			applied = append(applied, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return applied, nil
}

// upToDate reports whether every migration in ms is recorded as applied.
// It checks that the migrations table exists first: a failed query would
// abort the caller's transaction.
func upToDate(ctx context.Context, db DBTX, ms []Migration) (bool, error) {
	var exists bool
	if err := db.QueryRow(ctx, "SELECT to_regclass('projectionist_schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return false, fmt.Errorf("reading applied migrations: %w", err)
	}
	if !exists {
		return false, nil
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM projectionist_schema_migrations WHERE version = ANY($1)",
		migrationVersions(ms)).Scan(&n); err != nil {
		return false, fmt.Errorf("reading applied migrations: %w", err)
	}
	return n == len(ms), nil
}

func migrationVersions(ms []Migration) []int32 {
	vs := make([]int32, len(ms))
	for i, m := range ms {
		vs[i] = int32(m.Version)
	}
	return vs
}

// ErrNoSchema is matched (with errors.Is) by the error of a processor, a
// store read or append, and the topology and progress queries that found
// one of projectionist's tables missing: the database was never
// migrated. Run [Migrate] (or `projectionist migrate`) first. Retrying
// does not help until someone does.
var ErrNoSchema = errors.New("projectionist schema missing: run projection.Migrate (or `projectionist migrate`) on this database first")

// noSchema wraps ErrNoSchema around an error that says a table is
// missing, unless Handle returned it (a read model's table is the
// projection's business: a HandlerError).
func noSchema(err error) error {
	var pgErr *pgconn.PgError
	var herr *HandlerError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" && !errors.As(err, &herr) && !errors.Is(err, ErrNoSchema) {
		return fmt.Errorf("%w: %w", ErrNoSchema, err)
	}
	return err
}

// MinServerVersion is the oldest PostgreSQL the schema runs on, as
// server_version_num: 13 brought the xid8 type and pg_current_xact_id(),
// which the log's read order (DESIGN.md rule 2) is built on.
const MinServerVersion = 130000

// checkServerVersion says, before any DDL, that a server is too old,
// rather than letting the first migration fail on "type xid8 does not
// exist".
func checkServerVersion(num int) error {
	if num >= MinServerVersion {
		return nil
	}
	// 120005 is 12.5; before 10, 90624 was 9.6.24.
	version := fmt.Sprintf("%d.%d", num/10000, num%10000)
	if num < 100000 {
		version = fmt.Sprintf("%d.%d", num/10000, num/100%100)
	}
	return fmt.Errorf("PostgreSQL %s is too old: projectionist needs PostgreSQL 13 or later (for xid8 and pg_current_xact_id)", version)
}
