package controllers_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// A scoped projection (user_count: User events only) caught up and rebuilt
// while Order events keep being appended, never pausing (issue 32 point
// 2): its status.lag counts only User events, so it reads 0 although
// Orders keep arriving after every reading, and CaughtUp, then Rebuilt and
// CaughtUp again, arrive while the Orders still flow. The rebuilt read
// model holds every user.
func TestScopedProjectionRebuiltUnderOtherAppends(t *testing.T) {
	const partitions, users = 2, 300
	ctx := t.Context()
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	if err := demo.EnsureSchema(ctx, db); err != nil {
		t.Fatal(err)
	}
	store := projection.NewStore()
	for i := range users {
		payload, _ := json.Marshal(demo.UserCreated{Email: fmt.Sprintf("u%d@example.com", i)})
		if _, err := store.Append(ctx, db, demo.AggregateUser, fmt.Sprintf("user-%d", i), projection.NoStream,
			projection.Event{EventType: demo.EventUserCreated, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	newProjection(t, ns, "user-count", "user_count", partitions)
	eventually(t, 60*time.Second, "2 ready replicas", func() error {
		p := getProjection(t, ns, "user-count")
		if p.Status.ReadyReplicas != partitions || p.Status.Partitions != partitions {
			return fmt.Errorf("%d ready, %d partitions", p.Status.ReadyReplicas, p.Status.Partitions)
		}
		return nil
	})
	userCount := func() projection.Projection { return &demo.UserCountProjection{} }
	orders := appendOrders(t, db)
	w := startWorkers(t, db, partitions, userCount)
	// caughtUp waits for CaughtUp True and status.lag 0 with at least 50
	// Orders appended since it began: they were arriving all the while.
	caughtUp := func(what string) {
		t.Helper()
		since := orders.orders.Load()
		eventually(t, 60*time.Second, what, func() error {
			p := getProjection(t, ns, "user-count")
			if got := condition(p, v1alpha1.ConditionCaughtUp); !strings.HasPrefix(got, "True/") {
				return fmt.Errorf("CaughtUp is %q, lag %d, head %d", got, p.Status.Lag, p.Status.HeadPosition)
			}
			if p.Status.Lag != 0 || orders.orders.Load() < since+50 {
				return fmt.Errorf("lag %d at head %d, %d orders since", p.Status.Lag, p.Status.HeadPosition, orders.orders.Load()-since)
			}
			return nil
		})
	}
	caughtUp("CaughtUp and lag 0 with Orders arriving")

	setRebuildToken(t, ns, "user-count", "again")
	eventually(t, 30*time.Second, "Stopping", func() error {
		if got := condition(getProjection(t, ns, "user-count"), v1alpha1.ConditionCaughtUp); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonRebuilding) {
			return fmt.Errorf("CaughtUp is %q", got)
		}
		return nil
	})
	w.stop(t)
	eventually(t, 60*time.Second, "Resetting", func() error {
		if got := condition(getProjection(t, ns, "user-count"), v1alpha1.ConditionRebuilding); !strings.HasPrefix(got, "True/"+v1alpha1.ReasonRebuildResetting) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		return nil
	})
	w = startWorkers(t, db, partitions, userCount)
	eventually(t, 60*time.Second, "Rebuilt with Orders arriving", func() error {
		p := getProjection(t, ns, "user-count")
		if got := condition(p, v1alpha1.ConditionRebuilding); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonRebuilt+`: rebuild "again" done`) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		return nil
	})
	caughtUp("CaughtUp again and lag 0 with Orders arriving")
	orders.finish(t)
	w.stop(t)
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM user_stats").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != users {
		t.Errorf("rebuilt user_stats holds %d users, want %d", n, users)
	}
}
