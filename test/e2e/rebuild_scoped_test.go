//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// orderStream appends OrderPlaced events, each a new Order aggregate, with
// plain INSERTs (the partition hash from the trigger) until stopped: events
// outside user-count's scope, arriving all the while.
type orderStream struct {
	appended atomic.Int64
	cancel   context.CancelFunc
	done     chan error
}

func startOrders(t *testing.T, db *database) *orderStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o := &orderStream{cancel: cancel, done: make(chan error, 1)}
	prefix := "e2e-order-" + randomSuffix() + "-"
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			_, err := db.pool.Exec(ctx, `INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
				VALUES ('Order', $1, 1, gen_random_uuid(), 'OrderPlaced', json_build_object('customer_id', 'e2e', 'amount_cents', $2::bigint))`,
				fmt.Sprintf("%s%d", prefix, i), i%500+1)
			if err != nil {
				if ctx.Err() == nil {
					o.done <- err
				} else {
					o.done <- nil
				}
				return
			}
			o.appended.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
		o.done <- nil
	}()
	t.Cleanup(o.cancel)
	return o
}

func (o *orderStream) stop(t *testing.T) {
	t.Helper()
	o.cancel()
	if err := <-o.done; err != nil {
		t.Fatalf("appending orders: %v", err)
	}
}

// rebuildScopedUnderOtherAppends rebuilds user-count (a ScopedProjection of
// User events) with `kubectl projectionist rebuild --wait` while Order
// events keep arriving, never pausing (issue 32 point 2: the rebuild never
// finished until the load stopped). The command returns Rebuilt, CaughtUp
// turns True and status.lag reads 0 (it counts only User events) with the
// Orders still arriving, and the rebuilt read model matches the log.
func (s *suite) rebuildScopedUnderOtherAppends(t *testing.T) {
	const name = "user-count"
	orders := startOrders(t, s.db)
	waitForEvents(t, s.db, 200, nil)
	token := "e2e-scoped-" + randomSuffix()
	begin := time.Now()
	out := plugin(t, "rebuild", name, "-n", s.ns, "--token", token, "--wait", "--timeout", catchUpTimeout.String())
	recordTiming(t, "scoped rebuild under other appends: kubectl projectionist rebuild --wait", time.Since(begin))
	if !strings.Contains(out, "Rebuilt") {
		t.Errorf("kubectl projectionist rebuild --wait said:\n%s\nwant Rebuilt", out)
	}
	kubectl(t, "wait", "--for=condition=CaughtUp", "projection/"+name, "-n", s.ns, "--timeout", catchUpTimeout.String())
	since := orders.appended.Load()
	eventually(t, name+" at lag 0 with Orders arriving", catchUpTimeout, func(ctx context.Context) error {
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		caughtUp := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionCaughtUp)
		if b := p.Status.Rebuild; b == nil || b.Token != token || b.Phase != v1alpha1.RebuildRebuilt ||
			caughtUp == nil || caughtUp.Status != metav1.ConditionTrue || p.Status.Lag != 0 {
			return fmt.Errorf("status.rebuild %+v, %s, lag %d", b, conditionString(p.Status.Conditions, v1alpha1.ConditionCaughtUp), p.Status.Lag)
		}
		if n := orders.appended.Load() - since; n < 50 {
			return fmt.Errorf("%d orders appended since the rebuild, waiting for 50", n)
		}
		return nil
	})
	orders.stop(t)
	s.checkUserStats(t)
}
