// Partition indexes: reads that stay proportional to a partition's own rows.

package projection

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Without a partition index, a partition of N reads the log through the
// index on (transaction_id, global_position) and filters partition_hash %
// N: PostgreSQL examines about N rows for every row the partition fetches,
// so the database's work for all N partitions together grows with N times
// the log (BenchmarkPartitionScanCost). A partition index for N,
//
//	CREATE INDEX events_partitions_N_idx ON events ((partition_hash % N), transaction_id, global_position)
//
// holds each partition's rows together, in the order processors read them:
// a partition's read is one index range of its own rows. The assignment
// stays the seed's int(fnv32a(id)) % N, so rescaling is as exact as
// without the index; the index only changes how PostgreSQL finds the rows.
// A processor reads through it once it is valid (see
// partitionIndexCheckInterval) and through the filter before that, with
// the same result.

// PartitionIndexName is the name of the partition index for n partitions.
func PartitionIndexName(n int) string { return "events_partitions_" + strconv.Itoa(n) + "_idx" }

// partitionIndexNamePattern recognises the partition indexes by name.
var partitionIndexNamePattern = regexp.MustCompile(`^events_partitions_([0-9]+)_idx$`)

// MinPartitionIndexPartitions is the smallest partition count that gets a
// partition index: with one partition every row is the partition's own.
const MinPartitionIndexPartitions = 2

// PartitionIndex is one partition index on the events table.
type PartitionIndex struct {
	// Partitions is the partition count the index serves.
	Partitions int
	// Name is the index's name, PartitionIndexName(Partitions).
	Name string
	// Valid: the build finished and processors read through it.
	Valid bool
	// Building: a CREATE INDEX CONCURRENTLY of it is in progress. An
	// index neither valid nor building is what a failed or interrupted
	// build left; CreatePartitionIndex rebuilds it.
	Building bool
	// SizeBytes is the index's size on disk.
	SizeBytes int64
	// UsedBy is the projections whose current partition count is
	// Partitions, sorted.
	UsedBy []string
}

// PartitionIndexes lists the partition indexes on the events table, by
// partition count.
func PartitionIndexes(ctx context.Context, db DBTX) ([]PartitionIndex, error) {
	rows, err := db.Query(ctx, listPartitionIndexesSQL)
	if err != nil {
		return nil, noSchema(fmt.Errorf("listing partition indexes: %w", err))
	}
	var out []PartitionIndex
	for rows.Next() {
		var ix PartitionIndex
		if err := rows.Scan(&ix.Name, &ix.Valid, &ix.Building, &ix.SizeBytes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing partition indexes: %w", err)
		}
		m := partitionIndexNamePattern.FindStringSubmatch(ix.Name)
		if m == nil {
			continue
		}
		if ix.Partitions, err = strconv.Atoi(m[1]); err != nil || ix.Name != PartitionIndexName(ix.Partitions) {
			continue // events_partitions_007_idx is not ours
		}
		out = append(out, ix)
	}
	if err := rows.Err(); err != nil {
		return nil, noSchema(fmt.Errorf("listing partition indexes: %w", err))
	}
	users, err := db.Query(ctx, partitionIndexUsersSQL)
	if err != nil {
		return nil, noSchema(fmt.Errorf("listing partition indexes' projections: %w", err))
	}
	var total int32
	var name string
	_, err = pgx.ForEachRow(users, []any{&total, &name}, func() error {
		for i := range out {
			if out[i].Partitions == int(total) {
				out[i].UsedBy = append(out[i].UsedBy, name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, noSchema(fmt.Errorf("listing partition indexes' projections: %w", err))
	}
	slices.SortFunc(out, func(a, b PartitionIndex) int { return a.Partitions - b.Partitions })
	return out, nil
}

// CreatePartitionIndex builds the partition index for n partitions, if it
// is not there yet, with CREATE INDEX CONCURRENTLY: appends and processors
// go on while it builds, and processors of n partitions read through it
// once it is valid. It returns when the index is valid, built true if this
// call built it, or with an error; a build takes about as long as two
// scans of the events table. An index that a
// failed or interrupted build left invalid is dropped and built again. When
// another session is building the index already, it returns at once with
// an error wrapping ErrPartitionIndexBuilding.
//
// db must not be a transaction (PostgreSQL builds an index concurrently
// only outside one), and its role must own the events table. n below
// MinPartitionIndexPartitions is refused.
func CreatePartitionIndex(ctx context.Context, db DBTX, n int) (built bool, err error) {
	if n < MinPartitionIndexPartitions {
		return false, fmt.Errorf("%w: a partition index serves %d or more partitions, not %d", ErrInvalidConfig, MinPartitionIndexPartitions, n)
	}
	name := PartitionIndexName(n)
	ixs, err := PartitionIndexes(ctx, db)
	if err != nil {
		return false, err
	}
	for _, ix := range ixs {
		if ix.Partitions != n {
			continue
		}
		switch {
		case ix.Valid:
			return false, nil
		case ix.Building:
			return false, fmt.Errorf("creating partition index %s: %w", name, ErrPartitionIndexBuilding)
		}
		// A failed build's leftover: PostgreSQL still maintains it on
		// every append, but no read can use it.
		if err := dropPartitionIndex(ctx, db, n); err != nil {
			return false, fmt.Errorf("dropping the invalid partition index %s left by a failed build: %w", name, err)
		}
	}
	// CREATE INDEX puts the index in the events table's schema.
	_, err = db.Exec(ctx, fmt.Sprintf(`CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON events ((partition_hash %% %d), transaction_id, global_position)`,
		pgx.Identifier{name}.Sanitize(), n))
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P07") {
			// Another session created it between the check and ours.
			return false, fmt.Errorf("creating partition index %s: %w", name, ErrPartitionIndexBuilding)
		}
		return false, noSchema(fmt.Errorf("creating partition index %s: %w", name, err))
	}
	// IF NOT EXISTS also returns at once for an index another session
	// started building after the check.
	ok, err := partitionIndexValid(ctx, db, n)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("creating partition index %s: %w", name, ErrPartitionIndexBuilding)
	}
	// The planner's estimate of a partition's share of the rows comes
	// from the index expression's statistics.
	if _, err := db.Exec(ctx, `ANALYZE events`); err != nil {
		return true, fmt.Errorf("analyzing events after creating partition index %s: %w", name, err)
	}
	return true, nil
}

// ErrPartitionIndexBuilding: another session is building the partition
// index; processors read through it once that build is done.
var ErrPartitionIndexBuilding = errors.New("another session is building the partition index")

// DropPartitionIndex drops the partition index for n partitions, if there
// is one, with DROP INDEX CONCURRENTLY: processors of n partitions go back
// to reading through the filter within partitionIndexCheckInterval, with
// the same result. db must not be a transaction.
func DropPartitionIndex(ctx context.Context, db DBTX, n int) error {
	if n < MinPartitionIndexPartitions {
		return fmt.Errorf("%w: there is no partition index for %d partitions", ErrInvalidConfig, n)
	}
	if err := dropPartitionIndex(ctx, db, n); err != nil {
		return noSchema(fmt.Errorf("dropping partition index %s: %w", PartitionIndexName(n), err))
	}
	return nil
}

// dropPartitionIndex drops the partition index for n in the events table's
// schema, and no same-named index of another schema on the search_path.
func dropPartitionIndex(ctx context.Context, db DBTX, n int) error {
	var schema string
	if err := db.QueryRow(ctx, eventsSchemaSQL).Scan(&schema); err != nil {
		return err
	}
	_, err := db.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+pgx.Identifier{schema, PartitionIndexName(n)}.Sanitize())
	return err
}

// partitionIndexValid reports whether processors of n partitions can read
// through the partition index for n.
func partitionIndexValid(ctx context.Context, db DBTX, n int) (bool, error) {
	var ok bool
	if err := db.QueryRow(ctx, partitionIndexValidSQL, PartitionIndexName(n)).Scan(&ok); err != nil {
		return false, noSchema(fmt.Errorf("checking partition index %s: %w", PartitionIndexName(n), err))
	}
	return ok, nil
}
