package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/demo"
	"github.com/projectionist/projectionist/pkg/projection"
)

// setRebuildToken sets spec.rebuildToken with a merge patch.
func setRebuildToken(t *testing.T, ns, name, token string) {
	t.Helper()
	p := &v1alpha1.Projection{}
	p.Namespace, p.Name = ns, name
	patch := fmt.Sprintf(`{"spec":{"rebuildToken":%q}}`, token)
	if err := k8sClient.Patch(t.Context(), p, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// rebuildPhase is status.rebuild's token and phase, "" without one.
func rebuildPhase(p *v1alpha1.Projection) string {
	if p.Status.Rebuild == nil {
		return ""
	}
	return p.Status.Rebuild.Token + "/" + string(p.Status.Rebuild.Phase)
}

// orderAppender appends OrderPlaced events until stopped, counting the
// committed ones and their amounts. It is stopped between appends, never
// during one, so that every committed event is counted.
type orderAppender struct {
	orders, cents atomic.Int64
	stopped       atomic.Bool
	done          chan error
}

func appendOrders(t *testing.T, db *pgxpool.Pool) *orderAppender {
	ctx := t.Context()
	a := &orderAppender{done: make(chan error, 1)}
	store := projection.NewStore()
	go func() {
		for i := int64(1); !a.stopped.Load(); i++ {
			amount := i%500 + 1
			payload, _ := json.Marshal(demo.OrderPlaced{CustomerID: fmt.Sprintf("c-%d", i%13), AmountCents: amount})
			if _, err := store.Append(ctx, db, demo.AggregateOrder, fmt.Sprintf("order-%d", i), projection.NoStream,
				projection.Event{EventType: demo.EventOrderPlaced, Payload: payload}); err != nil {
				a.done <- err
				return
			}
			a.orders.Add(1)
			a.cents.Add(amount)
			time.Sleep(2 * time.Millisecond) // paces the appender: events arrive all through the rebuild
		}
		a.done <- nil
	}()
	return a
}

func (a *orderAppender) finish(t *testing.T) {
	t.Helper()
	a.stopped.Store(true)
	if err := <-a.done; err != nil {
		t.Fatalf("appending orders: %v", err)
	}
}

// workers plays the worker pods' part, which the kwok pods cannot (they
// run no container): one processor per partition, following the
// operator's topology, each applying a pending reset first, as
// worker.Run does.
type workers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

func startWorkers(t *testing.T, db *pgxpool.Pool, partitions int, newProjection func() projection.Projection) *workers {
	ctx, cancel := context.WithCancel(t.Context())
	w := &workers{cancel: cancel, errs: make(chan error, partitions)}
	for key := range partitions {
		w.wg.Go(func() {
			p := newProjection()
			if _, err := projection.ApplyPendingReset(ctx, db, p); err != nil {
				w.errs <- err
				return
			}
			cfg := projection.DefaultProcessorConfig()
			cfg.PartitionKey, cfg.Topology, cfg.PollInterval = key, projection.TopologyFollow, 10*time.Millisecond
			if err := projection.NewProcessor(db, nil, cfg).Run(ctx, p); err != nil {
				w.errs <- err
			}
		})
	}
	return w
}

func (w *workers) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	w.wg.Wait()
	close(w.errs)
	for err := range w.errs {
		t.Errorf("worker: %v", err)
	}
}

// applyResets plays the workers' start: each partition applies the
// pending reset, racing the others, and returns what it did.
func applyResets(t *testing.T, db *pgxpool.Pool, partitions int, p projection.Projection) []projection.AppliedReset {
	t.Helper()
	out := make([]projection.AppliedReset, partitions)
	var wg sync.WaitGroup
	for k := range partitions {
		wg.Go(func() {
			r, err := projection.ApplyPendingReset(t.Context(), db, p)
			if err != nil {
				t.Error(err)
			}
			out[k] = r
		})
	}
	wg.Wait()
	return out
}

// A rebuild through spec.rebuildToken of the non-idempotent revenue demo
// projection: the operator stops the worker pods and requests the reset
// only once none is left, brings the pods back, follows the reset and the
// replay (Rebuilding: Stopping, Resetting, Replaying with progress), and
// ends with Rebuilt, an Event and CaughtUp True again. Orders keep coming
// all the while, and the rebuilt read model (wrong before) equals the sum
// of OrderPlaced.
func TestRebuildThroughSpecToken(t *testing.T) {
	const partitions = 2
	ctx := t.Context()
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	if err := demo.EnsureSchema(ctx, db); err != nil {
		t.Fatal(err)
	}
	newProjection(t, ns, "revenue", "revenue", partitions)
	eventually(t, 60*time.Second, "2 ready replicas", func() error {
		p := getProjection(t, ns, "revenue")
		if p.Status.ReadyReplicas != partitions || p.Status.Partitions != partitions {
			return fmt.Errorf("%d ready, %d partitions", p.Status.ReadyReplicas, p.Status.Partitions)
		}
		return nil
	})
	revenue := func() projection.Projection { return &demo.RevenueProjection{} }
	orders := appendOrders(t, db)
	w := startWorkers(t, db, partitions, revenue)
	eventually(t, 60*time.Second, "CaughtUp", func() error {
		if got := condition(getProjection(t, ns, "revenue"), v1alpha1.ConditionCaughtUp); !strings.HasPrefix(got, "True/") {
			return fmt.Errorf("CaughtUp is %q", got)
		}
		return nil
	})
	// The bug the rebuild fixes.
	if _, err := db.Exec(ctx, "UPDATE revenue SET total_cents = total_cents + 999999"); err != nil {
		t.Fatal(err)
	}
	var oldPods corev1.PodList
	if err := k8sClient.List(ctx, &oldPods, client.InNamespace(ns)); err != nil || len(oldPods.Items) != partitions {
		t.Fatalf("%d pods (%v), want %d", len(oldPods.Items), err, partitions)
	}

	setRebuildToken(t, ns, "revenue", "fix-1")
	eventually(t, 30*time.Second, "Stopping and CaughtUp False", func() error {
		p := getProjection(t, ns, "revenue")
		if got := condition(p, v1alpha1.ConditionCaughtUp); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonRebuilding+": rebuild \"fix-1\" under way") {
			return fmt.Errorf("CaughtUp is %q", got)
		}
		if rebuildPhase(p) == "" {
			return fmt.Errorf("no status.rebuild")
		}
		return nil
	})
	// The pods go; the running processors stand for them until then.
	w.stop(t)
	// The reset is requested once no worker pod is left, never before.
	eventually(t, 60*time.Second, "the reset requested", func() error {
		st, err := projection.GetResetStatus(ctx, db, "revenue")
		if err != nil {
			return err
		}
		requested := st.RequestedToken == "fix-1"
		var pods corev1.PodList
		if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return err
		}
		if requested && len(pods.Items) > 0 {
			for _, old := range oldPods.Items {
				for _, pod := range pods.Items {
					if pod.UID == old.UID {
						t.Fatalf("reset requested while the old pod %s still exists", pod.Name)
					}
				}
			}
		}
		if !requested {
			return fmt.Errorf("requested %q, %d pods", st.RequestedToken, len(pods.Items))
		}
		return nil
	})
	eventually(t, 30*time.Second, "Resetting with the pods back", func() error {
		p := getProjection(t, ns, "revenue")
		if got := condition(p, v1alpha1.ConditionRebuilding); !strings.HasPrefix(got, "True/"+v1alpha1.ReasonRebuildResetting) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		sts, err := getStatefulSet(t, ns, "revenue")
		if err != nil {
			return err
		}
		if *sts.Spec.Replicas != partitions {
			return fmt.Errorf("StatefulSet replicas %d", *sts.Spec.Replicas)
		}
		return nil
	})

	// The workers start: one resets, the other finds it done.
	results := applyResets(t, db, partitions, &demo.RevenueProjection{})
	if applied := (results[0].Outcome == projection.ResetApplied) != (results[1].Outcome == projection.ResetApplied); !applied {
		t.Errorf("ApplyPendingReset outcomes %+v, want one applied", results)
	}
	eventually(t, 30*time.Second, "Replaying with progress", func() error {
		p := getProjection(t, ns, "revenue")
		got := condition(p, v1alpha1.ConditionRebuilding)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonRebuildReplaying+`: rebuild "fix-1": replaying: position 0 of head `) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		if p.Status.Rebuild.ResetAt == nil || p.Status.Lag == 0 {
			return fmt.Errorf("status.rebuild %+v, lag %d", p.Status.Rebuild, p.Status.Lag)
		}
		return nil
	})
	w = startWorkers(t, db, partitions, revenue)
	eventually(t, 30*time.Second, "events replayed at a rate", func() error {
		p := getProjection(t, ns, "revenue")
		if p.Status.Rebuild.Phase == v1alpha1.RebuildReplaying && (p.Status.Rebuild.EventsReplayed == 0 || p.Status.Rebuild.EventsPerSecond == 0) {
			return fmt.Errorf("status.rebuild %+v", p.Status.Rebuild)
		}
		return nil
	})
	orders.finish(t)
	eventually(t, 60*time.Second, "Rebuilt and CaughtUp", func() error {
		p := getProjection(t, ns, "revenue")
		if got := condition(p, v1alpha1.ConditionRebuilding); !strings.HasPrefix(got, "False/"+v1alpha1.ReasonRebuilt+`: rebuild "fix-1" done`) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		if got := condition(p, v1alpha1.ConditionCaughtUp); !strings.HasPrefix(got, "True/") {
			return fmt.Errorf("CaughtUp is %q", got)
		}
		if rebuildPhase(p) != "fix-1/Rebuilt" || p.Status.Rebuild.CompletedAt == nil {
			return fmt.Errorf("status.rebuild %+v", p.Status.Rebuild)
		}
		return nil
	})
	waitForEvent(t, ns, "revenue", corev1.EventTypeNormal, v1alpha1.ReasonRebuilt, `rebuild "fix-1" done`)
	waitForEvent(t, ns, "revenue", corev1.EventTypeNormal, "RebuildStarted", `token "fix-1"`)
	// Let the workers finish what was appended, then compare.
	eventually(t, 60*time.Second, "lag 0", func() error {
		p, err := projection.GetProgress(ctx, db, "revenue")
		if err != nil || p.Lag != 0 {
			return fmt.Errorf("lag %d (%v)", p.Lag, err)
		}
		return nil
	})
	w.stop(t)
	var got, count int64
	if err := db.QueryRow(ctx, demo.RevenueTotalSQL).Scan(&count, &got); err != nil {
		t.Fatal(err)
	}
	if count != orders.orders.Load() || got != orders.cents.Load() {
		t.Errorf("rebuilt revenue: %d orders, %d cents; appended %d orders, %d cents", count, got, orders.orders.Load(), orders.cents.Load())
	}
	if n, gen := topologyOf(t, db, "revenue"); n != partitions || gen != 2 {
		t.Errorf("topology %d partitions generation %d, want %d partitions and generation 2 (the reset's)", n, gen, partitions)
	}
}

// A projection without a Reset hook cannot be rebuilt declaratively:
// Rebuilding turns False with reason ResetNotSupported and the workers'
// message, a Warning Event says so, the pods come back, and the
// checkpoints are untouched. A rebuild asked for while suspended waits
// for the resume, and says so.
func TestRebuildWithoutResetHook(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newDatabase(t, ns)
	newProjectionWithTopology(t, ns, db, "counter", "counter", 1)
	if _, err := projection.NewStore().Append(ctx, db, "Counter", "c-1", projection.AnyVersion,
		projection.Event{EventType: "Counted"}, projection.Event{EventType: "Counted"}); err != nil {
		t.Fatal(err)
	}
	cfg := projection.DefaultProcessorConfig()
	cfg.Topology = projection.TopologyFollow
	if err := projection.NewProcessor(db, nil, cfg).CatchUp(ctx, noop{}); err != nil {
		t.Fatal(err)
	}
	checkpoint := func() int64 {
		var pos int64
		if err := db.QueryRow(ctx, "SELECT last_global_position FROM projection_checkpoints WHERE projection_name = 'counter'").Scan(&pos); err != nil {
			t.Fatal(err)
		}
		return pos
	}
	before := checkpoint()

	// Suspended first: the rebuild waits.
	p := &v1alpha1.Projection{}
	p.Namespace, p.Name = ns, "counter"
	if err := k8sClient.Patch(ctx, p, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"suspend":true,"rebuildToken":"r1"}}`))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the rebuild waiting", func() error {
		got := condition(getProjection(t, ns, "counter"), v1alpha1.ConditionRebuilding)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonSuspended+`: rebuild "r1" waits: spec.suspend is true`) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		return nil
	})
	if st, err := projection.GetResetStatus(ctx, db, "counter"); err != nil || st.RequestedToken != "" {
		t.Fatalf("reset status while suspended: %+v (%v), want no request", st, err)
	}
	if err := k8sClient.Patch(ctx, p, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"suspend":false}}`))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "Resetting", func() error {
		if got := condition(getProjection(t, ns, "counter"), v1alpha1.ConditionRebuilding); !strings.HasPrefix(got, "True/"+v1alpha1.ReasonRebuildResetting) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		return nil
	})
	if r := applyResets(t, db, 1, noop{}); r[0].Outcome != projection.ResetRefused {
		t.Fatalf("ApplyPendingReset = %+v, want refused", r[0])
	}
	eventually(t, 30*time.Second, "ResetNotSupported", func() error {
		p := getProjection(t, ns, "counter")
		got := condition(p, v1alpha1.ConditionRebuilding)
		if !strings.HasPrefix(got, "False/"+v1alpha1.ReasonResetNotSupported+`: projection "counter" (controllers_test.noop) does not implement projection.Resetter: it cannot be rebuilt declaratively`) {
			return fmt.Errorf("Rebuilding is %q", got)
		}
		if rebuildPhase(p) != "r1/Failed" || p.Status.Rebuild.CompletedAt == nil {
			return fmt.Errorf("status.rebuild %+v", p.Status.Rebuild)
		}
		if got := condition(p, v1alpha1.ConditionCaughtUp); !strings.HasPrefix(got, "True/") {
			return fmt.Errorf("CaughtUp is %q: nothing was reset", got)
		}
		return nil
	})
	waitForEvent(t, ns, "counter", corev1.EventTypeWarning, v1alpha1.ReasonResetNotSupported, `rebuild "r1" failed`)
	if after := checkpoint(); after != before {
		t.Errorf("checkpoint at %d after the refused rebuild, want it untouched at %d", after, before)
	}
	sts, err := getStatefulSet(t, ns, "counter")
	if err != nil || *sts.Spec.Replicas != 1 {
		t.Errorf("StatefulSet %v (%v), want 1 replica after the failed rebuild", sts.Spec.Replicas, err)
	}
}
