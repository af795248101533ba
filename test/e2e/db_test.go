//go:build e2e

package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// database is the run's database: hostURL for this process, podURL for
// the pods.
type database struct {
	pool            *pgxpool.Pool
	hostURL, podURL string
}

// newDatabase creates a database of the run's own (dropped when the test
// ends, unless it failed and E2E_KEEP_ON_FAILURE is set). When the user may
// not create databases, it uses E2E_DATABASE_URL's database as it is,
// provided it holds no events yet.
func newDatabase(t *testing.T, name string) *database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, cfg.databaseURL)
	if err != nil {
		t.Fatalf("connecting to E2E_DATABASE_URL: %v", redact(err))
	}
	defer admin.Close(ctx)

	db := &database{hostURL: cfg.databaseURL, podURL: cfg.podDatabaseURL}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		t.Logf("created database %s", name)
		if db.hostURL, err = withDatabase(cfg.databaseURL, name); err != nil {
			t.Fatalf("E2E_DATABASE_URL: %v", err)
		}
		if db.podURL, err = withDatabase(cfg.podDatabaseURL, name); err != nil {
			t.Fatalf("E2E_POD_DATABASE_URL: %v", err)
		}
		t.Cleanup(func() {
			if t.Failed() && cfg.keepOnFailure {
				t.Logf("E2E_KEEP_ON_FAILURE: keeping database %s", name)
				return
			}
			// FORCE: a worker of a Projection that outlived the operator may
			// still hold a connection until the namespace is gone. FORCE
			// refuses (42501) while an autovacuum worker, which runs as no
			// role of ours, is in the database; it soon ends, so try again.
			eventually(t, "dropping database "+name, time.Minute, func(ctx context.Context) error {
				conn, err := pgx.Connect(ctx, cfg.databaseURL)
				if err != nil {
					return redact(err)
				}
				defer conn.Close(ctx)
				_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
				return err
			})
		})
	case errors.As(err, &pgErr) && pgErr.Code == "42501": // insufficient_privilege
		var events int64
		if err := admin.QueryRow(ctx, `SELECT CASE WHEN to_regclass('events') IS NULL THEN 0
			ELSE (SELECT count(*) FROM (SELECT FROM events LIMIT 1) e) END`).Scan(&events); err != nil {
			t.Fatal(err)
		}
		if events > 0 {
			t.Fatalf("the user of E2E_DATABASE_URL may not create databases, and its database already holds events: " +
				"give the user CREATEDB, or name an empty database")
		}
		t.Logf("no CREATEDB privilege: using E2E_DATABASE_URL's database as it is (it has no events yet)")
	default:
		t.Fatalf("creating database %s: %v", name, err)
	}

	db.pool, err = pgxpool.New(ctx, db.hostURL)
	if err != nil {
		t.Fatalf("connecting to the e2e database: %v", redact(err))
	}
	t.Cleanup(db.pool.Close)
	return db
}

// withDatabase is dsn naming database name instead.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("not a valid URL")
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// key=value: a later dbname wins.
	return dsn + " dbname=" + name, nil
}

// redact keeps connection errors from printing a password (pgx does not
// print it, but a URL in a wrapped error might).
func redact(err error) error {
	for _, dsn := range []string{cfg.databaseURL, cfg.podDatabaseURL} {
		if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && pw != "" && strings.Contains(err.Error(), pw) {
				return errors.New(strings.ReplaceAll(err.Error(), pw, "xxxxx"))
			}
		}
	}
	return err
}

func randomSuffix() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// queryInt runs a query returning one integer.
func (db *database) queryInt(ctx context.Context, sql string, args ...any) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

func (db *database) mustInt(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := db.queryInt(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// topology is a projection's row in projection_topology and its
// checkpoints.
type topology struct {
	generation  int64
	partitions  int32
	checkpoints map[int32]checkpoint // by partition key
}

type checkpoint struct {
	generation int64
	processed  int64
	position   int64
}

func (db *database) topology(ctx context.Context, projection string) (*topology, error) {
	tp := &topology{checkpoints: map[int32]checkpoint{}}
	err := db.pool.QueryRow(ctx, `SELECT generation, total_partitions FROM projection_topology WHERE projection_name = $1`,
		projection).Scan(&tp.generation, &tp.partitions)
	if err != nil {
		return nil, fmt.Errorf("reading %s's topology: %w", projection, err)
	}
	rows, err := db.pool.Query(ctx, `SELECT partition_key, generation, events_processed, last_global_position
		FROM projection_checkpoints WHERE projection_name = $1`, projection)
	if err != nil {
		return nil, err
	}
	var key int32
	var c checkpoint
	_, err = pgx.ForEachRow(rows, []any{&key, &c.generation, &c.processed, &c.position}, func() error {
		tp.checkpoints[key] = c
		return nil
	})
	return tp, err
}

// mustTopology is topology within 30 s, failing t if it cannot be read.
func (db *database) mustTopology(t *testing.T, projection string) *topology {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, err := db.topology(ctx, projection)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// allProcessing checks that the projection runs n partitions in the
// database and every one of them has handled events in the current
// generation.
func (db *database) allProcessing(ctx context.Context, projection string, n int32) (*topology, error) {
	tp, err := db.topology(ctx, projection)
	if err != nil {
		return nil, err
	}
	if tp.partitions != n {
		return nil, fmt.Errorf("topology generation %d has %d partitions, want %d", tp.generation, tp.partitions, n)
	}
	for k := range n {
		c, ok := tp.checkpoints[k]
		switch {
		case !ok:
			return nil, fmt.Errorf("no checkpoint for partition %d", k)
		case c.generation != tp.generation:
			return nil, fmt.Errorf("partition %d's checkpoint is of generation %d, not %d", k, c.generation, tp.generation)
		case c.processed == 0:
			return nil, fmt.Errorf("partition %d has processed nothing in generation %d yet", k, tp.generation)
		}
	}
	return tp, nil
}

// headPosition is the newest event's position.
func (db *database) headPosition(ctx context.Context) (int64, error) {
	return db.queryInt(ctx, `SELECT coalesce(max(global_position), 0) FROM events`)
}

// activityLogCaughtUp checks that activity_log holds a row for each event.
func (db *database) activityLogCaughtUp(ctx context.Context) error {
	var events, rows int64
	if err := db.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM activity_log)`).
		Scan(&events, &rows); err != nil {
		return err
	}
	if rows != events {
		return fmt.Errorf("activity_log has %d rows for %d events", rows, events)
	}
	return nil
}

// checkExactlyOnce asserts on activity_log, the exactly-once oracle, once
// it has caught up: one row per event of the log (the primary key on
// event_id refuses a second), every event present, each in the partition
// its aggregate hashes to under the topology that applied it, and each
// aggregate's versions applied in order (by seq, the order of application).
// It returns the number of events.
func (db *database) checkExactlyOnce(t *testing.T) int64 {
	t.Helper()
	events := db.mustInt(t, `SELECT count(*) FROM events`)
	rows := db.mustInt(t, `SELECT count(*) FROM activity_log`)
	distinct := db.mustInt(t, `SELECT count(DISTINCT event_id) FROM activity_log`)
	if rows != events || distinct != events {
		t.Errorf("activity_log: %d rows, %d distinct event ids, for %d events in the log", rows, distinct, events)
	}
	if missing := db.mustInt(t, `SELECT count(*) FROM events e
		WHERE NOT EXISTS (SELECT FROM activity_log a WHERE a.event_id = e.event_id)`); missing != 0 {
		t.Errorf("%d events of the log are not in activity_log", missing)
	}
	if stray := db.mustInt(t, `SELECT count(*) FROM activity_log a
		WHERE NOT EXISTS (SELECT FROM events e WHERE e.event_id = a.event_id)`); stray != 0 {
		t.Errorf("%d activity_log rows are of no event in the log", stray)
	}
	if wrong := db.mustInt(t, `SELECT count(*) FROM activity_log a JOIN events e USING (event_id)
		WHERE a.partition_key IS NULL OR a.partition_key <> e.partition_hash % a.total_partitions`); wrong != 0 {
		t.Errorf("%d events were applied by a partition their aggregate does not hash to", wrong)
	}
	// Every aggregate's versions start at 1 without gaps, and every event
	// is there, so in the order of application the k-th row of an
	// aggregate must be its version k.
	if disorder := db.mustInt(t, `SELECT count(*) FROM (
			SELECT aggregate_version,
			       row_number() OVER (PARTITION BY aggregate_type, aggregate_id ORDER BY seq) AS applied
			FROM activity_log) x
		WHERE aggregate_version <> applied`); disorder != 0 {
		t.Errorf("%d activity_log rows were applied out of their aggregate's version order", disorder)
	}
	return events
}

// aggregatesAcrossGenerations is how many aggregates had their events
// applied by more than one topology generation: the ones whose order a
// rescale could have broken.
func (db *database) aggregatesAcrossGenerations(t *testing.T) int64 {
	t.Helper()
	return db.mustInt(t, `SELECT count(*) FROM (SELECT FROM activity_log
		GROUP BY aggregate_type, aggregate_id HAVING count(DISTINCT generation) > 1) x`)
}

// logDistribution logs which topology generations and partitions applied
// how many events, and returns the count per partition count.
func (db *database) logDistribution(t *testing.T) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT generation, total_partitions, partition_key, count(*)
		FROM activity_log GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`)
	if err != nil {
		t.Fatal(err)
	}
	byTotal := map[int32]int64{}
	var b strings.Builder
	var gen int64
	var total, key int32
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&gen, &total, &key, &n}, func() error {
		fmt.Fprintf(&b, "\n  generation %d, partition %d of %d: %d events", gen, key, total, n)
		byTotal[total] += n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("activity_log rows by the partition that applied them:%s", b.String())
	return byTotal
}

// dump returns the projections' rows in the database, for a failure report.
func (db *database) dump() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	for _, q := range []string{
		`SELECT count(*) AS events, coalesce(max(global_position), 0) AS head FROM events`,
		`SELECT projection_name, generation, total_partitions, events_processed_before, updated_at FROM projection_topology ORDER BY 1`,
		`SELECT projection_name, partition_key, generation, total_partitions, last_transaction_id::text, last_global_position, events_processed, updated_at
			FROM projection_checkpoints ORDER BY 1, 2`,
		`SELECT projection_name, generation, total_partitions, partition_key, last_global_position FROM projection_frontier ORDER BY 1, 2, 4`,
		`SELECT (SELECT count(*) FROM activity_log) AS activity_log_rows, (SELECT count(*) FROM user_stats) AS user_stats_rows`,
		`SELECT projection_name, event_id, global_position, error FROM projection_dead_letters LIMIT 20`,
	} {
		fmt.Fprintf(&b, "\n-- %s\n", q)
		rows, err := db.pool.Query(ctx, q)
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			continue
		}
		for _, f := range rows.FieldDescriptions() {
			fmt.Fprintf(&b, "%s\t", f.Name)
		}
		b.WriteString("\n")
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				fmt.Fprintf(&b, "error: %v\n", err)
				break
			}
			for _, v := range vals {
				fmt.Fprintf(&b, "%v\t", v)
			}
			b.WriteString("\n")
		}
		if err := rows.Err(); err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
		}
		rows.Close()
	}
	return b.String()
}
