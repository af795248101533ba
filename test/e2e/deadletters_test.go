//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// plugin runs the kubectl plugin with args against the suite's cluster.
func plugin(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.plugin, args...)
	cmd.Env = os.Environ() // KUBECONFIG, as kubectl gets it
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl projectionist %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// deadLetterRetry: a poison event is dead-lettered by activity-log running
// with errorPolicy DeadLetter (a CHECK constraint the test adds refuses its
// row), seen through the plugin without database access, fixed (the
// constraint dropped) and retried with the plugin; the worker applies it
// once, the dead letter is gone, and activity_log is exact again. The
// error policy is put back to Stop at the end.
func (s *suite) deadLetterRetry(t *testing.T) {
	const name = "activity-log"
	before := s.db.mustTopology(t, "activity_log")
	setPolicy := func(policy string) {
		kubectl(t, "patch", "projection", name, "-n", s.ns, "--type", "merge", "-p", fmt.Sprintf(`{"spec":{"errorPolicy":%q}}`, policy))
		s.waitSettled(t, name, before.partitions)
	}
	setPolicy("DeadLetter")
	t.Cleanup(func() {
		_, _ = s.db.pool.Exec(context.Background(), "ALTER TABLE activity_log DROP CONSTRAINT IF EXISTS e2e_poison")
	})
	if _, err := s.db.pool.Exec(context.Background(),
		"ALTER TABLE activity_log ADD CONSTRAINT e2e_poison CHECK (event_type <> 'E2EPoison') NOT VALID"); err != nil {
		t.Fatal(err)
	}
	poison := uuid.New()
	// A plain SQL writer's INSERT (the trigger computes the partition
	// hash), on an aggregate of its own, between ordinary events.
	t.Logf("events generate:\n%s", projectionist(t, s.db, "events", "generate", "--count", "200", "--aggregates", loadAggregates, "--progress", "0"))
	if _, err := s.db.pool.Exec(context.Background(), `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
		VALUES ('E2E', $1, 1, $2, 'E2EPoison', '{}')`, "poison-"+randomSuffix(), poison); err != nil {
		t.Fatal(err)
	}
	t.Logf("events generate:\n%s", projectionist(t, s.db, "events", "generate", "--count", "200", "--aggregates", loadAggregates, "--progress", "0"))

	begin := time.Now()
	eventually(t, "the poison event dead-lettered and shown by the plugin", catchUpTimeout, func(ctx context.Context) error {
		out, err := run(ctx, nil, cfg.plugin, "dead-letters", "list", name, "-n", s.ns)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "has 1 dead letters") || !strings.Contains(out, poison.String()) || !strings.Contains(out, "e2e_poison") {
			return fmt.Errorf("dead-letters list:\n%s", out)
		}
		return nil
	})
	recordTiming(t, "dead letter: poison appended to shown by kubectl projectionist dead-letters list", time.Since(begin))
	if n := s.db.mustInt(t, "SELECT count(*) FROM activity_log WHERE event_id = $1", poison); n != 0 {
		t.Fatalf("the poison event is in activity_log %d times before the retry", n)
	}
	// Every other event went past it.
	eventually(t, "every event but the poison one applied", catchUpTimeout, func(ctx context.Context) error {
		if n := s.db.mustInt(t, "SELECT (SELECT count(*) FROM events) - (SELECT count(*) FROM activity_log)"); n != 1 {
			return fmt.Errorf("%d events not in activity_log, want 1", n)
		}
		return nil
	})

	if _, err := s.db.pool.Exec(context.Background(), "ALTER TABLE activity_log DROP CONSTRAINT e2e_poison"); err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	out := plugin(t, "dead-letters", "retry", name, "-n", s.ns, "--id", poison.String(), "--wait")
	t.Logf("kubectl projectionist dead-letters retry:\n%s", out)
	if !strings.Contains(out, "done: retry requested for 1 dead letters") {
		t.Errorf("dead-letters retry --wait said:\n%s", out)
	}
	eventually(t, "the retried event applied and its dead letter gone", catchUpTimeout, func(ctx context.Context) error {
		if n := s.db.mustInt(t, "SELECT count(*) FROM projection_dead_letters WHERE projection_name = 'activity_log'"); n != 0 {
			return fmt.Errorf("%d dead letters left", n)
		}
		return s.db.activityLogCaughtUp(ctx)
	})
	recordTiming(t, "dead letter: kubectl projectionist dead-letters retry to applied", time.Since(begin))
	if n := s.db.mustInt(t, "SELECT count(*) FROM activity_log WHERE event_id = $1", poison); n != 1 {
		t.Errorf("the retried event is in activity_log %d times, want 1", n)
	}
	setPolicy("Stop")
	eventually(t, "status.deadLetters back to 0", readyTimeout, func(ctx context.Context) error {
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		if p.Status.DeadLetters != 0 || len(p.Status.DeadLetterSamples) != 0 {
			return fmt.Errorf("status.deadLetters %d, %d samples", p.Status.DeadLetters, len(p.Status.DeadLetterSamples))
		}
		return nil
	})
	n := s.db.checkExactlyOnce(t)
	t.Logf("activity_log: %d events, each applied exactly once, the poison one after its retry", n)
}
