package projection_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projectionist/projectionist/pkg/projection"
)

// plainInsertSQL is the INSERT that README.md and docs/architecture.md give
// writers in other languages: no partition hash, bounded context, event
// version, metadata, created_at or transaction id. Keep them in step.
const plainInsertSQL = `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
VALUES ($1, $2, $3, $4, $5, $6)`

// versionSQL is the read the same docs put before that INSERT, the one
// Store.Append makes: the aggregate's last version (no row: none), and
// whether this transaction is older than the one that wrote it.
const versionSQL = `SELECT aggregate_version, transaction_id > pg_current_xact_id() AS retry
FROM events
WHERE bounded_context = '' AND aggregate_type = $1 AND aggregate_id = $2
ORDER BY aggregate_version DESC LIMIT 1`

// sqlVersion reads an aggregate's version with versionSQL.
func sqlVersion(ctx context.Context, tx pgx.Tx, aggregateType, aggregateID string) (version int64, retry bool, err error) {
	err = tx.QueryRow(ctx, versionSQL, aggregateType, aggregateID).Scan(&version, &retry)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return version, retry, err
}

// hashIDs returns ids whose partition hash, computed in Go and in SQL,
// must agree: the edge cases, multi-byte text, ids at the schema's length
// limit, and random strings.
func hashIDs() []string {
	ids := []string{
		"", "a", "order-42", "User-0", "0", " ", "\t\n", "~!@#$%^&*()_+{}|:\"<>?",
		strings.Repeat("z", 200),
		"é", "e\u0301", "Straße", "ÅÄÖ-åäö", "naïve café",
		"日本語", "用户-123", "한국어", "Ελληνικά", "кириллица", "עברית", "العربية",
		"🎉", "👩‍👩‍👧‍👦", "🇸🇪", "a\u0308\u0323\u20dd", "\u00a0\u200b\ufeff", "\U0010ffff", "\ufffd",
		strings.Repeat("x", projection.MaxAggregateIDBytes-1),
		strings.Repeat("x", projection.MaxAggregateIDBytes),
		strings.Repeat("x", projection.MaxAggregateIDBytes-2) + "é",
		strings.Repeat("x", projection.MaxAggregateIDBytes-4) + "🎉",
		strings.Repeat("日", projection.MaxAggregateIDBytes/3),
		strings.Repeat("ÿ", projection.MaxAggregateIDBytes/2),
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for range 2000 {
		// Random bytes made valid UTF-8, so all of the byte range is hashed;
		// PostgreSQL's text holds no NUL.
		b := make([]byte, rng.IntN(201))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		s := strings.ToValidUTF8(string(b), "\ufffd")
		ids = append(ids, strings.ReplaceAll(s, "\x00", "0"))
	}
	for range 500 {
		// Random code points of every length, 1 to 4 bytes.
		var sb strings.Builder
		for range rng.IntN(60) {
			r := rune(1 + rng.IntN(utf8.MaxRune))
			if !utf8.ValidRune(r) {
				r = utf8.RuneError
			}
			sb.WriteRune(r)
		}
		ids = append(ids, sb.String())
	}
	return ids
}

// projection_partition_hash is bit-identical to Go's PartitionHash, so that
// an event appended by a plain INSERT lands in the partition the processor
// and every Go caller expect.
func TestPartitionHashSQLMatchesGo(t *testing.T) {
	pool := newPool(t)
	ids := hashIDs()
	rows, err := pool.Query(t.Context(), `
		SELECT projection_partition_hash(id)
		FROM unnest($1::text[]) WITH ORDINALITY AS t(id, ord)
		ORDER BY ord`, ids)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) {
		t.Fatalf("got %d hashes for %d ids", len(got), len(ids))
	}
	mismatches := 0
	for i, id := range ids {
		if want := int64(projection.PartitionHash(id)); got[i] != want {
			mismatches++
			if mismatches <= 5 {
				t.Errorf("projection_partition_hash(%q) = %d, Go's PartitionHash = %d", id, got[i], want)
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of %d ids hash differently in SQL and Go", mismatches, len(ids))
	}

	var null bool
	if err := pool.QueryRow(t.Context(), "SELECT projection_partition_hash(NULL) IS NULL").Scan(&null); err != nil || !null {
		t.Errorf("projection_partition_hash(NULL) IS NULL = %v, %v; want true (STRICT)", null, err)
	}
}

// A writer that is not this library appends with a plain INSERT, in
// transactions of its own interleaved with Go appends: the trigger fills in
// the partition hash, the defaults the rest, and processors with three
// partitions apply every event exactly once, each in the partition of its
// aggregate's Go hash, in version order.
func TestPlainSQLInsertIsProcessed(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t, newAppliedTable)

	sqlAggregates := []string{"sql-order-1", "sql-order-2", "sql-Straße", "sql-用户", "sql-🎉", "sql-e\u0301"}
	wantTx := map[uuid.UUID]uint64{} // event id -> the writing transaction
	total := 0
	for round := range 4 {
		// Go appends to other aggregates, between the SQL transactions.
		for a := range 5 {
			if _, err := store.Append(ctx, pool, "Order", fmt.Sprintf("go-order-%d", a), projection.AnyVersion, ev("Placed"), ev("Paid")); err != nil {
				t.Fatal(err)
			}
			total += 2
		}
		// One SQL transaction per round, two events per aggregate.
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var ids []uuid.UUID
			for _, agg := range sqlAggregates {
				version, retry, err := sqlVersion(ctx, tx, "Order", agg)
				if err != nil {
					return err
				}
				if retry {
					return fmt.Errorf("%q: this transaction is older than its last event's", agg)
				}
				for range 2 {
					version++
					id := uuid.New()
					payload := fmt.Sprintf(`{"round": %d, "version": %d}`, round, version)
					if _, err := tx.Exec(ctx, plainInsertSQL, "Order", agg, version, id, "LineAdded", payload); err != nil {
						return err
					}
					ids = append(ids, id)
				}
			}
			var xid uint64
			if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xid); err != nil {
				return err
			}
			for _, id := range ids {
				wantTx[id] = xid
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: plain INSERT: %v", round, err)
		}
		total += 2 * len(sqlAggregates)
	}

	// The stored rows are what Store.Append would have written.
	if n := queryInt(t, pool, `SELECT count(*) FROM events
		WHERE aggregate_id LIKE 'sql-%' AND bounded_context = '' AND event_version = 1
		  AND metadata::text = '{}' AND created_at <= now()`); n != len(wantTx) {
		t.Errorf("%d of %d SQL-inserted events have the defaults Append writes", n, len(wantTx))
	}
	rows, err := pool.Query(ctx, "SELECT event_id, aggregate_id, partition_hash, transaction_id::text::bigint FROM events")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		var agg string
		var hash int64
		var xid uint64
		if err := rows.Scan(&id, &agg, &hash, &xid); err != nil {
			t.Fatal(err)
		}
		if want := int64(projection.PartitionHash(agg)); hash != want {
			t.Errorf("event %s of %q: partition_hash %d, want %d", id, agg, hash, want)
		}
		if want, ok := wantTx[id]; ok && xid != want {
			t.Errorf("event %s of %q: transaction_id %d, want the writing transaction's %d", id, agg, xid, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for key := range 3 {
		cfg := projection.DefaultProcessorConfig()
		cfg.PartitionKey, cfg.TotalPartitions, cfg.BatchSize = key, 3, 7
		proc := projection.NewProcessor(pool, store, cfg)
		wg.Go(func() { errs[key] = proc.CatchUp(ctx, applyLog{name: "sqlwriter", key: key}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	// applied's primary key (projection, event_id) makes a second apply fail
	// CatchUp, so a full count means each event exactly once.
	if n := queryInt(t, pool, "SELECT count(*) FROM applied"); n != total {
		t.Fatalf("applied %d events, want %d", n, total)
	}
	rows, err = pool.Query(ctx, "SELECT aggregate_id, partition_key, aggregate_version FROM applied ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	perKey := map[int]int{}
	for rows.Next() {
		var agg string
		var key int
		var version int64
		if err := rows.Scan(&agg, &key, &version); err != nil {
			t.Fatal(err)
		}
		if want := projection.PartitionOf(agg, 3); key != want {
			t.Errorf("%q version %d applied by partition %d, want %d", agg, version, key, want)
		}
		if version != last[agg]+1 {
			t.Errorf("%q: version %d applied after %d", agg, version, last[agg])
		}
		last[agg] = version
		perKey[key]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for key := range 3 {
		if perKey[key] == 0 {
			t.Errorf("partition %d applied nothing; the test's aggregates should cover every partition", key)
		}
	}
}

// The trigger fills only a missing partition hash: one given, as
// Store.Append gives it, is stored as is, and still checked.
func TestPlainSQLInsertKeepsGivenPartitionHash(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)
	if _, err := pool.Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload, partition_hash)
		VALUES ('Order', 'given', 1, $1, 'Placed', '{}', 7)`, uuid.New()); err != nil {
		t.Fatal(err)
	}
	if h := queryInt(t, pool, "SELECT partition_hash FROM events WHERE aggregate_id = 'given'"); h != 7 {
		t.Errorf("partition_hash = %d, want the given 7", h)
	}
	_, err := pool.Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload, partition_hash)
		VALUES ('Order', 'given', 2, $1, 'Placed', '{}', -1)`, uuid.New())
	if err == nil || !strings.Contains(err.Error(), "events_partition_hash_check") {
		t.Errorf("inserting partition_hash -1: %v, want a violation of events_partition_hash_check", err)
	}
}

// A plain INSERT takes no advisory lock, so the unique index on
// (bounded_context, aggregate_type, aggregate_id, aggregate_version) is what
// keeps it and Store.Append from writing one version twice: whichever
// inserts second waits for the first to commit, then fails, the SQL writer
// with unique_violation (23505) on events_aggregate_version_key, Append with
// ErrConcurrencyConflict. Nothing of the loser is stored.
func TestPlainSQLInsertRacesGoAppend(t *testing.T) {
	ctx := t.Context()
	pool, store := newStore(t)
	waitBlocked := func(what string) {
		eventually(t, what, func() bool {
			return queryInt(t, pool, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") > 0
		})
	}

	// Append first, in a transaction still open; the SQL writer read
	// version 0 and inserts version 1 too.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := store.Append(ctx, tx, "Order", "raced", projection.ExactVersion(0), ev("Placed")); err != nil {
		t.Fatal(err)
	}
	sqlErr := make(chan error, 1)
	go func() {
		_, err := pool.Exec(ctx, plainInsertSQL, "Order", "raced", 1, uuid.New(), "Placed", "{}")
		sqlErr <- err
	}()
	waitBlocked("the plain INSERT to wait for Append's transaction")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var pgErr *pgconn.PgError
	if err := <-sqlErr; !errors.As(err, &pgErr) || pgErr.Code != "23505" || pgErr.ConstraintName != "events_aggregate_version_key" {
		t.Fatalf("plain INSERT of a version Append wrote: %v, want unique_violation on events_aggregate_version_key", err)
	}

	// The SQL writer first, in a transaction still open; Append, which
	// read version 1, writes version 2 too.
	sqlTx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sqlTx.Rollback(ctx) }()
	version, retry, err := sqlVersion(ctx, sqlTx, "Order", "raced")
	if err != nil || version != 1 || retry {
		t.Fatalf("version read: %d, retry %v, %v; want 1, false", version, retry, err)
	}
	sqlEvent := uuid.New()
	if _, err := sqlTx.Exec(ctx, plainInsertSQL, "Order", "raced", version+1, sqlEvent, "Paid", "{}"); err != nil {
		t.Fatal(err)
	}
	appendErr := make(chan error, 1)
	go func() {
		_, err := store.Append(ctx, pool, "Order", "raced", projection.AnyVersion, ev("Cancelled"))
		appendErr <- err
	}()
	waitBlocked("Append to wait for the plain INSERT's transaction")
	if err := sqlTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-appendErr; !errors.Is(err, projection.ErrConcurrencyConflict) {
		t.Fatalf("Append of a version a plain INSERT wrote: %v, want ErrConcurrencyConflict", err)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM events WHERE aggregate_id = 'raced'"); n != 2 {
		t.Errorf("%d events stored, want 2 (one per version)", n)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM events WHERE aggregate_version = 2 AND event_id = $1", sqlEvent); n != 1 {
		t.Errorf("version 2 is not the plain INSERT's event")
	}
}
