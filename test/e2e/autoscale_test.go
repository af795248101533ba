//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// autoscaleUnderLoad hands activity-log's partition count to the operator
// (spec.autoscaling, 1 to 3 partitions, a 2 s target) while events keep
// coming: a backlog built up while suspended puts the lag far above the
// target on the resume, so the operator scales up to 3; once the lag has
// drained it scales down, one stabilization window at a time, to 1 with
// the load still on. Removing spec.autoscaling hands the count back to
// spec.replicas. Every event is applied exactly once throughout, some of
// them under 3 partitions.
func (s *suite) autoscaleUnderLoad(t *testing.T) {
	const name = "activity-log"
	before := s.db.mustTopology(t, "activity_log")
	s.checkWorkerPodDisruptionBudget(t, name, before.partitions)
	gen := startGenerator(t, s.db, "--count", endless, "--aggregates", loadAggregates, "--rate", loadRate, "--concurrency", concurrency)
	waitForEvents(t, s.db, 200, gen.arriving)

	kubectl(t, "patch", "projection", name, "-n", s.ns, "--type", "merge", "-p", `{"spec":{"suspend":true}}`)
	eventually(t, name+" suspended with a backlog older than the target", readyTimeout, func(ctx context.Context) error {
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		if p.Status.Replicas != 0 || p.Status.LagSeconds < 6 {
			return fmt.Errorf("%d pods, lag %d events, %ds", p.Status.Replicas, p.Status.Lag, p.Status.LagSeconds)
		}
		return nil
	})

	begin := time.Now()
	kubectl(t, "patch", "projection", name, "-n", s.ns, "--type", "merge", "-p", `{"spec":{"suspend":false,"autoscaling":{`+
		`"minReplicas":1,"maxReplicas":3,"targetLagSeconds":2,"scaleUpStabilizationWindow":"0s","scaleDownStabilizationWindow":"8s"}}}`)
	var counts []int32
	record := func(p *v1alpha1.Projection) {
		if a := p.Status.Autoscaling; a != nil && (len(counts) == 0 || counts[len(counts)-1] != a.Partitions) {
			counts = append(counts, a.Partitions)
			t.Logf("autoscaler: %d partitions after %s: %s", a.Partitions, time.Since(begin).Round(time.Second), a.Message)
		}
	}
	// autoscaledTo checks that the autoscaler chose n partitions and that
	// they are all Ready.
	autoscaledTo := func(ctx context.Context, n int32) error {
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		record(p)
		if a := p.Status.Autoscaling; a == nil || a.Partitions != n || p.Status.Partitions != n || p.Status.ReadyReplicas != n {
			return fmt.Errorf("status.autoscaling %+v, %d partitions, %d ready", a, p.Status.Partitions, p.Status.ReadyReplicas)
		}
		return nil
	}
	eventually(t, name+" scaled up to 3 partitions by the autoscaler", readyTimeout, func(ctx context.Context) error {
		return autoscaledTo(ctx, 3)
	})
	recordTiming(t, "autoscale: resume with a backlog to 3 partitions Ready", time.Since(begin))
	s.waitForEvent(t, name, v1alpha1.ReasonAutoscaled, "above the target 2s")

	begin = time.Now()
	eventually(t, name+" scaled down to 1 partition with the load on", 2*readyTimeout, func(ctx context.Context) error {
		if !gen.running() {
			return fmt.Errorf("events generate ended")
		}
		return autoscaledTo(ctx, 1)
	})
	recordTiming(t, "autoscale: 3 partitions to 1 under load", time.Since(begin))
	gen.stop(t)

	peak := slices.Index(counts, slices.Max(counts))
	if !slices.IsSorted(counts[:peak+1]) || !slices.IsSortedFunc(counts[peak:], func(a, b int32) int { return int(b - a) }) {
		t.Errorf("the autoscaler chose %v partitions in turn: it went up again after going down", counts)
	}

	kubectl(t, "patch", "projection", name, "-n", s.ns, "--type", "merge", "-p", `{"spec":{"autoscaling":null}}`)
	eventually(t, "activity_log caught up after the load", catchUpTimeout, s.db.activityLogCaughtUp)
	s.waitSettled(t, name, before.partitions)
	n := s.db.checkExactlyOnce(t)
	if byTotal := s.db.logDistribution(t); byTotal[3] == 0 {
		t.Errorf("no event was applied with 3 partitions: the autoscaled rescale did not happen under load (%v)", byTotal)
	}
	t.Logf("activity_log: %d events, each applied exactly once and in order, across the autoscaler's %v partitions", n, counts)
}

// waitForEvent waits for an Event with reason on the Projection name whose
// note contains note.
func (s *suite) waitForEvent(t *testing.T, name, reason, note string) {
	t.Helper()
	eventually(t, "a "+reason+" Event on "+name, readyTimeout, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := s.c.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == reason && e.Regarding.Name == name && strings.Contains(e.Note, note) {
				return nil
			}
		}
		return fmt.Errorf("none among %d Events", len(list.Items))
	})
}

// checkWorkerPodDisruptionBudget checks that the operator keeps a
// PodDisruptionBudget of maxUnavailable 1 over the Projection's pods, and
// that the API server computes it against them.
func (s *suite) checkWorkerPodDisruptionBudget(t *testing.T, name string, pods int32) {
	t.Helper()
	eventually(t, name+"'s PodDisruptionBudget", readyTimeout, func(ctx context.Context) error {
		var pdb policyv1.PodDisruptionBudget
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, &pdb); err != nil {
			return err
		}
		if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) ||
			pdb.Status.ExpectedPods != pods || pdb.Status.DisruptionsAllowed != 1 {
			return fmt.Errorf("maxUnavailable %v, status expectedPods %d, disruptionsAllowed %d",
				pdb.Spec.MaxUnavailable, pdb.Status.ExpectedPods, pdb.Status.DisruptionsAllowed)
		}
		return nil
	})
}
