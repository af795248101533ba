package worker

import (
	"testing"
)

// The dead-letter gauge counts the projection's dead letters, whichever
// partition set them aside.
func TestDeadLettersMetric(t *testing.T) {
	dsn, pool := newDatabase(t)
	evs := mustAppend(t, pool, "Happened", "Happened", "Happened")
	for i, e := range evs[:2] {
		if _, err := pool.Exec(t.Context(), `INSERT INTO projection_dead_letters
			(projection_name, event_id, partition_key, global_position, transaction_id, aggregate_type, aggregate_id, event_type, error)
			VALUES ('p', $1, $2, $3, $4, $5, $6, $7, 'bad')`,
			e.EventID, i, e.GlobalPosition, e.TransactionID, e.AggregateType, e.AggregateID, e.EventType); err != nil {
			t.Fatal(err)
		}
	}
	r := start(t, Config{DatabaseURL: dsn, TotalPartitions: 1}, applyOnce{name: "p"})
	waitFor(t, "the events applied", func() bool { return count(t, pool, "SELECT count(*) FROM applied") == 3 })
	waitFor(t, "projectionist_dead_letters to count 2", func() bool {
		v, ok := r.metric(sample("projectionist_dead_letters", "p"))
		return ok && v == 2
	})
}
