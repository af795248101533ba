package controllers

import (
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
)

// computeStatus derives the Projection's status from what the phases
// observed. Fields the operator could not observe this time (progress,
// while the database is unreachable) keep their last values.
func (r *ProjectionReconciler) computeStatus(s *state) v1alpha1.ProjectionStatus {
	p := s.projection
	st := *p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation
	st.Selector = resources.Selector(p)
	st.Replicas, st.ReadyReplicas = 0, 0
	if s.statefulSet != nil {
		st.Replicas = s.statefulSet.Status.Replicas
		st.ReadyReplicas = s.statefulSet.Status.ReadyReplicas
	}
	if pr := s.progress; pr != nil {
		st.TopologyGeneration = pr.Topology.Generation
		st.Partitions = int32(pr.Topology.TotalPartitions)
		st.HeadPosition = pr.HeadPosition
		st.Lag = pr.Lag
		st.LagSeconds = 0
		if !pr.OldestUnprocessed.IsZero() {
			st.LagSeconds = max(0, int64(pr.Now.Sub(pr.OldestUnprocessed)/time.Second))
		}
		st.PartitionStatuses = nil
		for _, pp := range pr.Partitions {
			st.PartitionStatuses = append(st.PartitionStatuses, v1alpha1.PartitionStatus{
				Partition: int32(pp.PartitionKey), Position: pp.Position, Lag: pp.Lag})
		}
	}
	if s.deadLetters != nil {
		st.DeadLetters, st.DeadLetterSamples = *s.deadLetters, s.deadLetterSamples
	}
	if s.deadLetterAction != nil {
		st.DeadLetterAction = s.deadLetterAction
	}
	st.Autoscaling = s.autoscaling
	st.PartitionIndex = s.partitionIndex
	setDegradedCondition(&st, s)
	setProgressingCondition(&st, s)
	setReadyCondition(&st, s)
	setStalledCondition(&st, s)
	setRebuildStatus(&st, s)
	setCaughtUpCondition(&st, s)
	r.keepCaughtUpSince(&st, s)
	return st
}

// keepCaughtUpSince keeps CaughtUp as this operator first set it True: a
// pass that read the Projection from a cache that had not yet seen that
// status write would compute it from the older status, turning it True
// again with a later time (the cut-over signal's time would move) or,
// with events appended meanwhile, back to False. Only a rebuild starts it
// over.
func (r *ProjectionReconciler) keepCaughtUpSince(st *v1alpha1.ProjectionStatus, s *state) {
	p := s.projection
	m := r.memories.of(types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, p.UID)
	if rebuildUnderway(s) {
		m.caughtUp = nil
		return
	}
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionCaughtUp)
	if first := m.caughtUp; first != nil {
		if c == nil || c.Status != metav1.ConditionTrue || first.LastTransitionTime.Before(&c.LastTransitionTime) {
			kept := *first
			kept.ObservedGeneration = p.Generation
			if c != nil {
				*c = kept // in place: the conditions keep their order
			} else {
				st.Conditions = append(st.Conditions, kept)
			}
		}
		return
	}
	if c != nil && c.Status == metav1.ConditionTrue {
		first := *c
		m.caughtUp = &first
	}
}

// suspendedMessage says that the workers are stopped and what resuming
// brings back.
func suspendedMessage(s *state) string {
	n := s.projection.SpecReplicas()
	if s.autoscaling != nil {
		n = s.autoscaling.Partitions
	}
	return fmt.Sprintf("spec.suspend is true: the worker pods are stopped; resuming brings back %s with no topology change",
		partitions(int(n)))
}

// setCaughtUpCondition turns CaughtUp True the first time a progress
// reading has every partition of the topology past every event in its
// scope up to the head of the reading before it (caughtUpHead), and leaves
// it True from then on: it says the projection has caught up with the log
// once, not that it is caught up now (that is status.lag). While the log
// is empty it stays False (LogEmpty): a read model that has projected
// nothing is no signal to cut readers over to it.
//
// "Has passed what was there", not "a reading of lag 0": a projection
// keeping up with a steady stream of appends always has a few events to
// pass when it is read, and would never read 0 (issue 32). It turns True
// within two status reads of the partitions' passing the head of the first
// (StatusInterval, plus the time they take to pass it).
//
// A rebuild starts it over: False with reason Rebuilding from the moment
// the operator sees the new spec.rebuildToken until the replay is done,
// then True again in the same pass as Rebuilt.
func setCaughtUpCondition(st *v1alpha1.ProjectionStatus, s *state) {
	if rebuildUnderway(s) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionCaughtUp, Status: metav1.ConditionFalse,
			Reason: v1alpha1.ReasonRebuilding, ObservedGeneration: s.projection.Generation,
			Message: fmt.Sprintf("rebuild %q under way: the projection replays the log from the beginning", s.rebuild.status.Token)})
		return
	}
	if meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionCaughtUp) {
		return
	}
	pr := s.progress
	if pr == nil {
		if meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionCaughtUp) == nil {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionCaughtUp, Status: metav1.ConditionUnknown,
				Reason: v1alpha1.ReasonCatchingUp, Message: "no progress read from the database yet", ObservedGeneration: s.projection.Generation})
		}
		return
	}
	c := metav1.Condition{Type: v1alpha1.ConditionCaughtUp, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonCatchingUp, ObservedGeneration: s.projection.Generation}
	n := pr.Topology.TotalPartitions
	head := caughtUpHead(s)
	switch {
	case pr.HeadPosition == 0:
		c.Reason, c.Message = v1alpha1.ReasonLogEmpty, "the event log is empty: nothing to catch up with yet"
	case n == 0 || len(pr.Partitions) != n:
		c.Message = "the projection has no topology in the database yet"
	case !pr.PassedHead(head):
		// Not the count itself: the message would change, and the status
		// be written, on every pass.
		c.Message = "some partition still has events to handle"
	default:
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonLagReachedZero
		c.Message = fmt.Sprintf("all %d partitions had passed every event in their scope up to position %d (the log's head when last read)", n, head)
		if n == 1 {
			c.Message = fmt.Sprintf("the partition had passed every event in its scope up to position %d (the log's head when last read)", head)
		}
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

// caughtUpHead is the head a progress reading must have passed for
// CaughtUp and Rebuilt: the head of the reading before it, which the
// previous pass wrote to status.headPosition, at most StatusInterval old;
// this reading's own head when there is none (the first reading) or it is
// ahead of this one (a log restored from a backup).
func caughtUpHead(s *state) int64 {
	head := s.progress.HeadPosition
	if prev := s.projection.Status.HeadPosition; prev > 0 && prev < head {
		return prev
	}
	return head
}

// setDegradedCondition reports the operator's problem, else a failing
// worker, else (as False, not yet a problem) a slow read: see
// weighSlowReads, which makes a lasting slow read the problem unless a
// worker is failing.
func setDegradedCondition(st *v1alpha1.ProjectionStatus, s *state) {
	c := metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonReconciled, Message: "the operator can do what the spec asks", ObservedGeneration: s.projection.Generation}
	switch {
	case s.degraded != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, s.degraded.reason, s.degraded.message
	case s.workerFailure != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, s.workerFailure.reason, s.workerFailure.message
	case s.slowRead != nil:
		c.Reason, c.Message = s.slowRead.reason, s.slowRead.message
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

func setProgressingCondition(st *v1alpha1.ProjectionStatus, s *state) {
	c := metav1.Condition{Type: v1alpha1.ConditionProgressing, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonRolledOut, ObservedGeneration: s.projection.Generation,
		Message: fmt.Sprintf("%d of %d worker pods exist", st.Replicas, s.desired)}
	sts := s.statefulSet
	if s.nameInUse {
		c.Reason = v1alpha1.ReasonBlocked
		c.Message = fmt.Sprintf("%d of %d worker pods exist; the operator runs none while another Projection owns the projection name (see Degraded)",
			st.Replicas, s.desired)
	} else if s.degraded != nil && s.replicas != s.desired {
		// Not progressing: the pods stay as they are until the problem is
		// fixed.
		c.Reason = v1alpha1.ReasonBlocked
		c.Message = fmt.Sprintf("%d of %d worker pods exist; the operator adds or removes none until %s is resolved (see Degraded)",
			st.Replicas, s.desired, s.degraded.reason)
	} else if sts == nil || s.replicas != s.desired || sts.Status.ObservedGeneration < sts.Generation ||
		st.Replicas != s.desired || st.ReadyReplicas != s.desired {
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonScaling
		c.Message = fmt.Sprintf("%d of %d worker pods ready", st.ReadyReplicas, s.desired)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

func setReadyCondition(st *v1alpha1.ProjectionStatus, s *state) {
	c := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: s.projection.Generation}
	switch {
	case s.suspended:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1alpha1.ReasonSuspended, suspendedMessage(s)
	case s.projection.Paused():
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1alpha1.ReasonPaused, "replicas is 0: the projection is paused"
	case s.degraded != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, s.degraded.reason, s.degraded.message
	case st.ReadyReplicas == s.desired && st.Replicas == s.desired && st.Partitions == s.desired:
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonAllReplicasReady
		c.Message = fmt.Sprintf("%d of %d partitions ready", st.ReadyReplicas, s.desired)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonReplicasNotReady
		c.Message = fmt.Sprintf("%d of %d partitions ready", st.ReadyReplicas, s.desired)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

// setStalledCondition says whether some partition has events to handle
// and has not moved its checkpoint for v1alpha1.StalledAfter, on the
// database's clock. A partition that never ran counts from the
// Projection's creation; until then it is named as not started, not as
// moving. Without a fresh progress reading the condition keeps its last
// value.
func setStalledCondition(st *v1alpha1.ProjectionStatus, s *state) {
	pr := s.progress
	if pr == nil {
		return
	}
	c := metav1.Condition{Type: v1alpha1.ConditionStalled, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonNothingToHandle, ObservedGeneration: s.projection.Generation,
		Message: "no partition has events to handle"}
	switch {
	case s.suspended:
		c.Reason, c.Message = v1alpha1.ReasonSuspended, suspendedMessage(s)
		meta.SetStatusCondition(&st.Conditions, c)
		return
	case s.projection.Paused():
		c.Reason, c.Message = v1alpha1.ReasonPaused, "replicas is 0: the projection is paused"
		meta.SetStatusCondition(&st.Conditions, c)
		return
	}
	// The messages stay the same while a state lasts, so that they do not
	// cause a status write on every pass.
	var moving bool
	var notStarted []int
	for _, pp := range pr.Partitions {
		if pp.Lag == 0 {
			continue
		}
		since := pp.UpdatedAt
		if since.IsZero() {
			since = s.projection.CreationTimestamp.Time
		}
		switch {
		case pr.Now.Sub(since) >= v1alpha1.StalledAfter && pp.UpdatedAt.IsZero():
			c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonNoProgress
			c.Message = fmt.Sprintf("partition %d has events to handle and has not run since the Projection was created, over %s ago: "+
				"is its worker pod running?", pp.PartitionKey, v1alpha1.StalledAfter)
		case pr.Now.Sub(since) >= v1alpha1.StalledAfter:
			c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonNoProgress
			c.Message = fmt.Sprintf("partition %d has events to handle and has not moved its checkpoint for over %s: "+
				"is its worker pod running, or is a long write transaction holding readers back?",
				pp.PartitionKey, v1alpha1.StalledAfter)
		case pp.UpdatedAt.IsZero():
			notStarted = append(notStarted, pp.PartitionKey)
			continue
		default:
			moving = true
			continue
		}
		meta.SetStatusCondition(&st.Conditions, c)
		return
	}
	switch {
	case len(notStarted) == 1:
		c.Reason = v1alpha1.ReasonNotStarted
		c.Message = fmt.Sprintf("partition %d has events to handle and has not run yet (Stalled if it has not %s after the Projection's creation)",
			notStarted[0], v1alpha1.StalledAfter)
	case len(notStarted) > 1:
		c.Reason = v1alpha1.ReasonNotStarted
		c.Message = fmt.Sprintf("partition %d and %d more have events to handle and have not run yet (Stalled if one has not %s after the Projection's creation)",
			notStarted[0], len(notStarted)-1, v1alpha1.StalledAfter)
	case moving:
		c.Reason, c.Message = v1alpha1.ReasonProgressing, "every partition with events to handle has moved its checkpoint recently"
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

// partitions is "1 partition" or "n partitions".
func partitions(n int) string {
	if n == 1 {
		return "1 partition"
	}
	return fmt.Sprintf("%d partitions", n)
}

// statusPatch is a JSON merge patch of the status that always carries
// replicas and readyReplicas, and partitions and lag once the operator has
// read them from the database (the projection has a topology). A plain
// merge patch from the typed object leaves out fields that did not change
// in Go — and a zero that the server has never stored is "unchanged" in
// Go — so a new Projection's LAG column stayed empty until its lag first
// moved off 0. Before the first reading they stay unset: a Projection
// whose database is unreachable shows no lag rather than a lag of 0.
type statusPatch struct{ client.Patch }

func (p statusPatch) Data(obj client.Object) ([]byte, error) {
	data, err := p.Patch.Data(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	st, _ := m["status"].(map[string]any)
	if st == nil {
		st = map[string]any{}
		m["status"] = st
	}
	s := obj.(*v1alpha1.Projection).Status
	st["replicas"], st["readyReplicas"] = s.Replicas, s.ReadyReplicas
	if s.TopologyGeneration > 0 {
		st["partitions"], st["lag"] = s.Partitions, s.Lag
	}
	return json.Marshal(m)
}
