package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// slowLedger records every event id it applies under a primary key, so
// that an event applied twice fails its batch and stops the processor,
// and takes about a millisecond an event, so that a partition has a
// throughput the autoscaler can measure and a burst outruns it.
var slowLedger = projection.Func("ledger", func(ctx context.Context, tx pgx.Tx, e *projection.PersistedEvent) error {
	time.Sleep(time.Millisecond)
	_, err := tx.Exec(ctx, `INSERT INTO ledger_applied (event_id) VALUES ($1)`, e.EventID)
	return err
})

// podWorkers plays the worker pods' part for a StatefulSet whose pod count
// changes: one processor per pod ordinal the StatefulSet asks for,
// started when it grows and stopped when it shrinks, each following the
// operator's topology as worker.Run does.
type podWorkers struct {
	mu      sync.Mutex
	running map[int]context.CancelFunc
	wg      sync.WaitGroup
	errs    chan error
}

func followStatefulSet(t *testing.T, db *pgxpool.Pool, ns, name string, p projection.Projection) *podWorkers {
	ctx, cancel := context.WithCancel(t.Context())
	w := &podWorkers{running: map[int]context.CancelFunc{}, errs: make(chan error, 64)}
	w.wg.Go(func() {
		for ctx.Err() == nil {
			if sts, err := getStatefulSet(t, ns, name); err == nil {
				w.scale(ctx, db, int(ptr.Deref(sts.Spec.Replicas, 1)), p)
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		w.wg.Wait()
	})
	return w
}

func (w *podWorkers) scale(ctx context.Context, db *pgxpool.Pool, n int, p projection.Projection) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for key, stop := range w.running {
		if key >= n {
			stop()
			delete(w.running, key)
		}
	}
	for key := range n {
		if _, ok := w.running[key]; ok {
			continue
		}
		pctx, stop := context.WithCancel(ctx)
		w.running[key] = stop
		w.wg.Go(func() {
			cfg := projection.DefaultProcessorConfig()
			cfg.PartitionKey, cfg.Topology, cfg.PollInterval = key, projection.TopologyFollow, 10*time.Millisecond
			if err := projection.NewProcessor(db, nil, cfg).Run(pctx, p); err != nil && pctx.Err() == nil {
				w.errs <- fmt.Errorf("partition %d: %w", key, err)
			}
		})
	}
}

// failed returns a worker's error, if one stopped with one.
func (w *podWorkers) failed() error {
	select {
	case err := <-w.errs:
		return err
	default:
		return nil
	}
}

// A Projection under spec.autoscaling on the real operator, with real
// PostgreSQL and workers following its StatefulSet: a burst of events
// raises the lag above the target and the operator adds partitions
// (Event and status.autoscaling say why), the lag drains, and once the
// scale-down window has passed idle it goes back to minReplicas; the count
// never goes up again after going down, spec.replicas is never written,
// and every event is applied exactly once. Suspending keeps the count;
// removing spec.autoscaling hands it back to spec.replicas.
func TestAutoscalingOnLag(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	if _, err := db.Exec(ctx, `CREATE TABLE ledger_applied (event_id uuid PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	p := &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ledger"},
		Spec: v1alpha1.ProjectionSpec{
			Replicas: ptr.To[int32](2),
			Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "db"}},
			Autoscaling: &v1alpha1.AutoscalingSpec{
				MinReplicas: ptr.To[int32](1), MaxReplicas: 4, TargetLagSeconds: ptr.To[int32](2),
				ScaleUpStabilizationWindow: &metav1.Duration{Duration: time.Second},
				// An hour until the rise is seen: on a loaded machine the
				// burst can take longer to append than a short window, and
				// the operator would rightly scale the idle projection down
				// first. Shortened to 5s below.
				ScaleDownStabilizationWindow: &metav1.Duration{Duration: time.Hour},
			},
		},
	}
	if err := k8sClient.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	workers := followStatefulSet(t, db, ns, "ledger", slowLedger)

	// The counts the autoscaler chose, in order, as status shows them.
	var counts []int32
	record := func(pr *v1alpha1.Projection) {
		if a := pr.Status.Autoscaling; a != nil && (len(counts) == 0 || counts[len(counts)-1] != a.Partitions) {
			counts = append(counts, a.Partitions)
		}
	}
	eventually(t, 60*time.Second, "the projection running idle at spec.replicas' 2 partitions", func() error {
		pr := getProjection(t, ns, "ledger")
		record(pr)
		if a := pr.Status.Autoscaling; a == nil || a.Partitions != 2 || pr.Status.Partitions != 2 {
			return fmt.Errorf("status.autoscaling %+v, %d partitions", a, pr.Status.Partitions)
		}
		return nil
	})

	// The burst: 6000 events over 300 aggregates, some 7 seconds of work
	// for 1 partition and 3.5 for 2, against a target of 2 seconds.
	const aggregates, perAggregate = 300, 20
	store := projection.NewStore()
	evs := make([]projection.Event, perAggregate)
	for i := range evs {
		evs[i] = projection.Event{EventType: "Entered", Payload: []byte(`{}`)}
	}
	// In one transaction: the whole backlog appears at once, however slow
	// the machine, and the workers cannot keep up with it append by
	// append (with the lag never passing the target).
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		for a := range aggregates {
			if _, err := store.Append(ctx, tx, "Account", fmt.Sprintf("acct-%d", a), projection.NoStream, evs...); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the autoscaler adding partitions", func() error {
		if err := workers.failed(); err != nil {
			t.Fatal(err)
		}
		pr := getProjection(t, ns, "ledger")
		record(pr)
		if a := pr.Status.Autoscaling; a == nil || a.Partitions <= 2 || a.LastScaleTime == nil {
			return fmt.Errorf("status.autoscaling %+v, lag %d (%ds), Degraded %s", a, pr.Status.Lag, pr.Status.LagSeconds,
				condition(pr, v1alpha1.ConditionDegraded))
		}
		return nil
	})
	waitForEvent(t, ns, "ledger", "Normal", v1alpha1.ReasonAutoscaled, "above the target 2s")
	mustUpdateSpec(t, ns, "ledger", func(s *v1alpha1.ProjectionSpec) {
		s.Autoscaling.ScaleDownStabilizationWindow = &metav1.Duration{Duration: 5 * time.Second}
	})

	eventually(t, 60*time.Second, "the lag drained, then back to minReplicas after the scale-down window", func() error {
		if err := workers.failed(); err != nil {
			t.Fatal(err)
		}
		pr := getProjection(t, ns, "ledger")
		record(pr)
		sts, err := getStatefulSet(t, ns, "ledger")
		if err != nil {
			return err
		}
		if a := pr.Status.Autoscaling; a == nil || a.Partitions != 1 || pr.Status.Partitions != 1 || pr.Status.Lag != 0 ||
			ptr.Deref(sts.Spec.Replicas, 0) != 1 {
			return fmt.Errorf("status.autoscaling %+v, %d partitions, lag %d, StatefulSet replicas %d, Degraded %s",
				a, pr.Status.Partitions, pr.Status.Lag, ptr.Deref(sts.Spec.Replicas, 0), condition(pr, v1alpha1.ConditionDegraded))
		}
		return nil
	})
	waitForEvent(t, ns, "ledger", "Normal", v1alpha1.ReasonAutoscaled, "nothing to pass and nothing appended")

	var applied int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM ledger_applied`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != aggregates*perAggregate {
		t.Errorf("%d events applied, want each of the %d once", applied, aggregates*perAggregate)
	}
	// Up, then down, and never up again: no flapping.
	peak := slices.Index(counts, slices.Max(counts))
	if !slices.IsSorted(counts[:peak+1]) || !slices.IsSortedFunc(counts[peak:], func(a, b int32) int { return int(b - a) }) ||
		counts[len(counts)-1] != 1 || slices.Max(counts) > 4 {
		t.Errorf("the autoscaler chose %v partitions in turn, want a rise from 2 to at most 4 and a fall to 1", counts)
	}
	t.Logf("partition counts chosen: %v", counts)
	pr := getProjection(t, ns, "ledger")
	if got := ptr.Deref(pr.Spec.Replicas, 0); got != 2 {
		t.Errorf("spec.replicas is %d, want the user's 2 untouched", got)
	}

	// Suspended, the pods go and the count stays; resumed, it is back.
	mustUpdateSpec(t, ns, "ledger", func(s *v1alpha1.ProjectionSpec) { s.Suspend = ptr.To(true) })
	eventually(t, 30*time.Second, "suspended: no pods, the count kept", func() error {
		pr := getProjection(t, ns, "ledger")
		sts, err := getStatefulSet(t, ns, "ledger")
		if err != nil {
			return err
		}
		if a := pr.Status.Autoscaling; a == nil || a.Partitions != 1 || pr.Status.Partitions != 1 || ptr.Deref(sts.Spec.Replicas, 1) != 0 {
			return fmt.Errorf("status.autoscaling %+v, %d partitions, StatefulSet replicas %d", a, pr.Status.Partitions, ptr.Deref(sts.Spec.Replicas, 1))
		}
		return nil
	})
	// Off: spec.replicas is the count again.
	mustUpdateSpec(t, ns, "ledger", func(s *v1alpha1.ProjectionSpec) { s.Suspend, s.Autoscaling = nil, nil })
	eventually(t, 30*time.Second, "autoscaling off: spec.replicas' 2 partitions", func() error {
		pr := getProjection(t, ns, "ledger")
		if pr.Status.Autoscaling != nil || pr.Status.Partitions != 2 || pr.Status.ReadyReplicas != 2 {
			return fmt.Errorf("status.autoscaling %+v, %d partitions, %d ready", pr.Status.Autoscaling, pr.Status.Partitions, pr.Status.ReadyReplicas)
		}
		return nil
	})
	if err := workers.failed(); err != nil {
		t.Fatal(err)
	}
}

// The API server refuses an autoscaling spec that cannot work.
func TestAutoscalingValidation(t *testing.T) {
	ns := newNamespace(t)
	for _, tc := range []struct {
		name string
		as   v1alpha1.AutoscalingSpec
	}{
		{"min above max", v1alpha1.AutoscalingSpec{MinReplicas: ptr.To[int32](5), MaxReplicas: 4}},
		{"max 0", v1alpha1.AutoscalingSpec{MaxReplicas: 0}},
		{"max above 1024", v1alpha1.AutoscalingSpec{MaxReplicas: 1025}},
		{"target 0", v1alpha1.AutoscalingSpec{MaxReplicas: 4, TargetLagSeconds: ptr.To[int32](0)}},
		{"window above 1h", v1alpha1.AutoscalingSpec{MaxReplicas: 4, ScaleUpStabilizationWindow: &metav1.Duration{Duration: 2 * time.Hour}}},
	} {
		p := &v1alpha1.Projection{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"},
			Spec: v1alpha1.ProjectionSpec{Autoscaling: &tc.as,
				Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "db"}}},
		}
		err := k8sClient.Create(t.Context(), p)
		if err == nil {
			_ = k8sClient.Delete(t.Context(), p)
		}
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want Invalid", tc.name, err)
		}
	}
}

// Issue 32 point 4: an idle Projection of 4 partitions put under
// spec.autoscaling goes down to minReplicas by halves, one per
// scale-down window (4 -> 2 -> 1, never 4 -> 1), and not before a whole
// window after autoscaling was enabled; status.autoscaling.message names
// the count chosen.
func TestAutoscalingScaleDownBounded(t *testing.T) {
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	newProjectionWithTopology(t, ns, db, "idle", "idle_one", 4)
	const window = 4 * time.Second
	enabled := time.Now()
	mustUpdateSpec(t, ns, "idle", func(s *v1alpha1.ProjectionSpec) {
		s.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: ptr.To[int32](1), MaxReplicas: 4, TargetLagSeconds: ptr.To[int32](2),
			ScaleDownStabilizationWindow: &metav1.Duration{Duration: window}}
	})
	// The counts chosen, in order, as the Autoscaled Events report them.
	var changes []string
	eventually(t, 60*time.Second, "the autoscaler down at minReplicas", func() error {
		changes = nil
		for _, e := range listEvents(t, ns) {
			if e.Reason == v1alpha1.ReasonAutoscaled && e.InvolvedObject.Name == "idle" {
				changes = append(changes, strings.SplitN(e.Message, ":", 3)[1])
			}
		}
		pr := getProjection(t, ns, "idle")
		a := pr.Status.Autoscaling
		// The Event follows the status write that reports the count.
		if a == nil || a.Partitions != 1 || pr.Status.Partitions != 1 || !slices.ContainsFunc(changes, func(c string) bool {
			return strings.HasSuffix(c, " to 1 partition")
		}) {
			return fmt.Errorf("status.autoscaling %+v, %d partitions; Autoscaled events %q", a, pr.Status.Partitions, changes)
		}
		if !strings.HasPrefix(a.Message, "keeping 1 partition: ") && !strings.HasPrefix(a.Message, "scaling from 2 to 1 partition: ") {
			t.Fatalf("status.autoscaling.message %q does not name the 1 partition chosen", a.Message)
		}
		return nil
	})
	if want := []string{" 4 to 2 partitions", " 2 to 1 partition"}; !slices.Equal(changes, want) {
		t.Errorf("Autoscaled events %q, want %q: at most half per window", changes, want)
	}
	// The first scale-down came a whole window after the spec was set.
	for _, e := range listEvents(t, ns) {
		if e.Reason != v1alpha1.ReasonAutoscaled || e.InvolvedObject.Name != "idle" || !strings.Contains(e.Message, " 4 to 2 ") {
			continue
		}
		at := e.EventTime.Time
		if at.IsZero() {
			at = e.FirstTimestamp.Time
		}
		if at.Before(enabled.Add(window)) {
			t.Errorf("the first scale-down at %v, want a whole window (%s) after autoscaling was enabled at %v", at, window, enabled)
		}
	}
}
