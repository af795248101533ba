package demo

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/projectionist/projectionist/pkg/projection"
)

// PrintUserStats prints user_stats, one user a line.
func PrintUserStats(ctx context.Context, db projection.DBTX, out io.Writer) error {
	rows, err := db.Query(ctx, `SELECT user_id, email, active FROM user_stats ORDER BY user_id`)
	if err != nil {
		return fmt.Errorf("reading user_stats: %w", err)
	}
	var id, email string
	var active bool
	var total, nActive int
	fmt.Fprintln(out, "user_stats:")
	_, err = pgx.ForEachRow(rows, []any{&id, &email, &active}, func() error {
		state := "active"
		if !active {
			state = "deactivated"
		} else {
			nActive++
		}
		total++
		fmt.Fprintf(out, "  %-8s %-22s %s\n", id, email, state)
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading user_stats: %w", err)
	}
	fmt.Fprintf(out, "  %d users, %d active\n", total, nActive)
	return nil
}

// PrintRevenue prints the revenue total.
func PrintRevenue(ctx context.Context, db projection.DBTX, out io.Writer) error {
	var orders, cents int64
	err := db.QueryRow(ctx, RevenueTotalSQL).Scan(&orders, &cents)
	if err != nil {
		return fmt.Errorf("reading revenue: %w", err)
	}
	fmt.Fprintf(out, "revenue: %d orders, $%d.%02d\n", orders, cents/100, cents%100)
	return nil
}

// PrintActivityLog prints how many events activity_log holds, by type.
func PrintActivityLog(ctx context.Context, db projection.DBTX, out io.Writer) error {
	rows, err := db.Query(ctx, `SELECT event_type, count(*) FROM activity_log GROUP BY 1 ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("reading activity_log: %w", err)
	}
	var typ string
	var n, total int64
	fmt.Fprintln(out, "activity_log:")
	_, err = pgx.ForEachRow(rows, []any{&typ, &n}, func() error {
		total += n
		fmt.Fprintf(out, "  %-16s %d\n", typ, n)
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading activity_log: %w", err)
	}
	fmt.Fprintf(out, "  %d events\n", total)
	return nil
}

// PrintCheckpoints prints a projection's checkpoints: how many events each
// partition has handled.
func PrintCheckpoints(ctx context.Context, db projection.DBTX, out io.Writer, projectionName string) error {
	rows, err := db.Query(ctx, `
		SELECT partition_key, total_partitions, events_processed FROM projection_checkpoints
		WHERE projection_name = $1 ORDER BY partition_key`, projectionName)
	if err != nil {
		return fmt.Errorf("reading checkpoints: %w", err)
	}
	var key, total int32
	var n int64
	fmt.Fprintf(out, "checkpoints of %s:\n", projectionName)
	_, err = pgx.ForEachRow(rows, []any{&key, &total, &n}, func() error {
		fmt.Fprintf(out, "  partition %d/%d: %d events\n", key, total, n)
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading checkpoints: %w", err)
	}
	return nil
}
