package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// condition is the part of a condition the table compares: messages are
// checked where they carry the decision (Blocked names the reason it
// waits for).
type condition struct {
	Status metav1.ConditionStatus
	Reason string
}

// conditions are the conditions a status shows, a zero condition for one
// it does not show.
type conditions struct {
	Ready, Progressing, Degraded, Stalled, CaughtUp condition
}

// set records c in cs, failing the test on a condition type it does not
// know.
func (cs *conditions) set(t *testing.T, c metav1.Condition) {
	t.Helper()
	to := map[string]*condition{
		v1alpha1.ConditionReady:       &cs.Ready,
		v1alpha1.ConditionProgressing: &cs.Progressing,
		v1alpha1.ConditionDegraded:    &cs.Degraded,
		v1alpha1.ConditionStalled:     &cs.Stalled,
		v1alpha1.ConditionCaughtUp:    &cs.CaughtUp,
	}[c.Type]
	if to == nil {
		t.Errorf("unexpected condition %s", c.Type)
		return
	}
	*to = condition{c.Status, c.Reason}
}

// TestComputeStatusConditions covers the condition setters without an API
// server: every combination of a database problem (Degraded, and Blocked
// while the pods differ from the spec), a worker failure, suspend, replicas
// 0 (Paused), and a stalled or moving partition, from one reconcile's
// observations to the four conditions the status shows. The envtest tests
// check the same conditions end to end for the common cases.
func TestComputeStatusConditions(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	created := metav1.NewTime(now.Add(-time.Hour))
	stalled := now.Add(-v1alpha1.StalledAfter - time.Second)
	moving := now.Add(-time.Second)
	// progress of a 2-partition topology whose partition 1 has lag and last
	// moved at updated (zero: never).
	progress := func(updated time.Time) *projection.Progress {
		return &projection.Progress{
			Topology:     projection.Topology{Generation: 1, TotalPartitions: 2},
			HeadPosition: 10,
			Partitions: []projection.PartitionProgress{
				{PartitionKey: 0, Position: 10, UpdatedAt: moving},
				{PartitionKey: 1, Position: 4, Lag: 3, LowestPending: 7, UpdatedAt: updated},
			},
			Lag: 3,
			Now: now,
		}
	}
	caughtUp := &projection.Progress{
		Topology:     projection.Topology{Generation: 1, TotalPartitions: 2},
		HeadPosition: 10,
		Partitions:   []projection.PartitionProgress{{PartitionKey: 0, Position: 10}, {PartitionKey: 1, Position: 10}},
		Now:          now,
	}
	// emptyLog: the partitions have lag 0 because there is nothing to
	// handle.
	emptyLog := &projection.Progress{
		Topology:   projection.Topology{Generation: 1, TotalPartitions: 2},
		Partitions: []projection.PartitionProgress{{PartitionKey: 0}, {PartitionKey: 1}},
		Now:        now,
	}
	// statefulSet with n pods, all ready and rolled out.
	statefulSet := func(n int32) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Generation: 2},
			Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To(n)},
			Status:     appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: n, ReadyReplicas: n},
		}
	}
	unreachable := &problem{v1alpha1.ReasonDatabaseUnreachable, "database of Secret db: connection refused"}
	// The conditions most rows expect, by what they say.
	var (
		allReady            = condition{metav1.ConditionTrue, v1alpha1.ReasonAllReplicasReady}
		notReady            = condition{metav1.ConditionFalse, v1alpha1.ReasonReplicasNotReady}
		notReadyNoDatabase  = condition{metav1.ConditionFalse, v1alpha1.ReasonDatabaseUnreachable}
		rolledOut           = condition{metav1.ConditionFalse, v1alpha1.ReasonRolledOut}
		scaling             = condition{metav1.ConditionTrue, v1alpha1.ReasonScaling}
		blocked             = condition{metav1.ConditionFalse, v1alpha1.ReasonBlocked}
		reconciled          = condition{metav1.ConditionFalse, v1alpha1.ReasonReconciled}
		databaseUnreachable = condition{metav1.ConditionTrue, v1alpha1.ReasonDatabaseUnreachable}
		notStalled          = condition{metav1.ConditionFalse, v1alpha1.ReasonProgressing}
		nothingToHandle     = condition{metav1.ConditionFalse, v1alpha1.ReasonNothingToHandle}
		logEmpty            = condition{metav1.ConditionFalse, v1alpha1.ReasonLogEmpty}
		noProgress          = condition{metav1.ConditionTrue, v1alpha1.ReasonNoProgress}
		lagZero             = condition{metav1.ConditionTrue, v1alpha1.ReasonLagReachedZero}
		catchingUp          = condition{metav1.ConditionFalse, v1alpha1.ReasonCatchingUp}
		noProgressYet       = condition{metav1.ConditionUnknown, v1alpha1.ReasonCatchingUp}
		workerFails         = condition{metav1.ConditionTrue, v1alpha1.ReasonWorkerFailing}
		paused              = condition{metav1.ConditionFalse, v1alpha1.ReasonPaused}
		suspended           = condition{metav1.ConditionFalse, v1alpha1.ReasonSuspended}
	)
	workerFailing := &problem{v1alpha1.ReasonWorkerFailing, "pod p-1 exited with code 1"}
	slowRead := &problem{v1alpha1.ReasonDatabaseSlow, "reading progress: no result within 5s, while the database answers a ping"}
	readSlow := condition{metav1.ConditionFalse, v1alpha1.ReasonDatabaseSlow}

	tests := []struct {
		name string
		// replicas is spec.replicas; suspend spec.suspend.
		replicas int32
		suspend  bool
		sts      *appsv1.StatefulSet
		// running is how many pods the StatefulSet was given this pass.
		running       int32
		degraded      *problem
		workerFailure *problem
		slowRead      *problem
		progress      *projection.Progress
		want          conditions
		// blockedOn, when set, must be named in Progressing's message.
		blockedOn string
	}{{
		name: "running and caught up", replicas: 2, sts: statefulSet(2), running: 2, progress: caughtUp,
		want: conditions{Ready: allReady, Progressing: rolledOut, Degraded: reconciled, Stalled: nothingToHandle, CaughtUp: lagZero},
	}, {
		name: "an empty log is nothing to have caught up with", replicas: 2, sts: statefulSet(2), running: 2, progress: emptyLog,
		want: conditions{Ready: allReady, Progressing: rolledOut, Degraded: reconciled, Stalled: nothingToHandle, CaughtUp: logEmpty},
	}, {
		name: "new Projection: no StatefulSet, no progress yet", replicas: 2, running: 2,
		want: conditions{Ready: notReady, Progressing: scaling, Degraded: reconciled, CaughtUp: noProgressYet},
	}, {
		name: "scaling up from 2 to 3", replicas: 3, sts: statefulSet(2), running: 3, progress: progress(moving),
		want: conditions{Ready: notReady, Progressing: scaling, Degraded: reconciled, Stalled: notStalled, CaughtUp: catchingUp},
	}, {
		name: "stalled partition", replicas: 2, sts: statefulSet(2), running: 2, progress: progress(stalled),
		want: conditions{Ready: allReady, Progressing: rolledOut, Degraded: reconciled, Stalled: noProgress, CaughtUp: catchingUp},
	}, {
		name: "a partition that never ran counts from the Projection's creation", replicas: 2, sts: statefulSet(2), running: 2,
		progress: progress(time.Time{}),
		want:     conditions{Ready: allReady, Progressing: rolledOut, Degraded: reconciled, Stalled: noProgress, CaughtUp: catchingUp},
	}, {
		name: "database unreachable while the pods match the spec", replicas: 2, sts: statefulSet(2), running: 2, degraded: unreachable,
		want: conditions{Ready: notReadyNoDatabase, Progressing: rolledOut, Degraded: databaseUnreachable, CaughtUp: noProgressYet},
	}, {
		name: "database unreachable during a rescale: Blocked", replicas: 3, sts: statefulSet(2), running: 2, degraded: unreachable,
		want:      conditions{Ready: notReadyNoDatabase, Progressing: blocked, Degraded: databaseUnreachable, CaughtUp: noProgressYet},
		blockedOn: v1alpha1.ReasonDatabaseUnreachable,
	}, {
		name: "a new Projection whose database is unreachable: Blocked at 0 pods", replicas: 2, running: 0, degraded: unreachable,
		want:      conditions{Ready: notReadyNoDatabase, Progressing: blocked, Degraded: databaseUnreachable, CaughtUp: noProgressYet},
		blockedOn: v1alpha1.ReasonDatabaseUnreachable,
	}, {
		name: "worker failing", replicas: 2, sts: statefulSet(2), running: 2, workerFailure: workerFailing, progress: progress(moving),
		want: conditions{Ready: allReady, Progressing: rolledOut, Degraded: workerFails, Stalled: notStalled, CaughtUp: catchingUp},
	}, {
		name: "database problem wins over a worker failure", replicas: 2, sts: statefulSet(2), running: 2,
		degraded: unreachable, workerFailure: workerFailing,
		want: conditions{Ready: notReadyNoDatabase, Progressing: rolledOut, Degraded: databaseUnreachable, CaughtUp: noProgressYet},
	}, {
		name: "a slow read is not a problem yet: Degraded False with its reason, the rest as before", replicas: 2, sts: statefulSet(2),
		running: 2, slowRead: slowRead,
		// Not ready only because this status never had a reading (0
		// partitions).
		want: conditions{Ready: notReady, Progressing: rolledOut, Degraded: readSlow, CaughtUp: noProgressYet},
	}, {
		name: "a worker failure wins over a slow read", replicas: 2, sts: statefulSet(2), running: 2,
		slowRead: slowRead, workerFailure: workerFailing,
		want: conditions{Ready: notReady, Progressing: rolledOut, Degraded: workerFails, CaughtUp: noProgressYet},
	}, {
		name: "paused (replicas 0) with a stalled partition is not Stalled", replicas: 0, sts: statefulSet(0), running: 0,
		progress: progress(stalled),
		want:     conditions{Ready: paused, Progressing: rolledOut, Degraded: reconciled, Stalled: paused, CaughtUp: catchingUp},
	}, {
		name: "suspended with a stalled partition is not Stalled", replicas: 2, suspend: true, sts: statefulSet(0), running: 0,
		progress: progress(stalled),
		want:     conditions{Ready: suspended, Progressing: rolledOut, Degraded: reconciled, Stalled: suspended, CaughtUp: catchingUp},
	}, {
		name: "paused while the database is unreachable", replicas: 0, sts: statefulSet(0), running: 0, degraded: unreachable,
		want: conditions{Ready: paused, Progressing: rolledOut, Degraded: databaseUnreachable, CaughtUp: noProgressYet},
	}, {
		name: "scaling down to 0 while the database is unreachable: Blocked", replicas: 0, sts: statefulSet(2), running: 2,
		degraded:  unreachable,
		want:      conditions{Ready: paused, Progressing: blocked, Degraded: databaseUnreachable, CaughtUp: noProgressYet},
		blockedOn: v1alpha1.ReasonDatabaseUnreachable,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &v1alpha1.Projection{
				ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop", Generation: 3, CreationTimestamp: created},
				Spec:       v1alpha1.ProjectionSpec{Replicas: ptr.To(tc.replicas), Suspend: ptr.To(tc.suspend)},
			}
			s := &state{projection: p, desired: tc.replicas, suspended: tc.suspend, statefulSet: tc.sts,
				replicas: tc.running, degraded: tc.degraded, workerFailure: tc.workerFailure, slowRead: tc.slowRead, progress: tc.progress}
			if tc.suspend {
				s.desired = 0
			}
			st := (&ProjectionReconciler{}).computeStatus(s)
			var got conditions
			for _, c := range st.Conditions {
				got.set(t, c)
				if c.ObservedGeneration != p.Generation {
					t.Errorf("%s: observedGeneration %d, want %d", c.Type, c.ObservedGeneration, p.Generation)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
			if tc.blockedOn != "" {
				for _, c := range st.Conditions {
					if c.Type == v1alpha1.ConditionProgressing && !strings.Contains(c.Message, tc.blockedOn) {
						t.Errorf("Progressing message %q does not name %s", c.Message, tc.blockedOn)
					}
				}
			}
		})
	}
}

// TestStalledMessage: what Stalled says of one Projection, created an
// hour or a minute ago, with each kind of partition: one that never ran,
// one that moved recently or long ago, with or without events to handle.
func TestStalledMessage(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	anHourAgo, aMinuteAgo := now.Add(-time.Hour), now.Add(-time.Minute)
	// partition is one partition's progress: lag events to handle, last
	// moved at updated (zero: never ran).
	partition := func(key int, lag int64, updated time.Time) projection.PartitionProgress {
		return projection.PartitionProgress{PartitionKey: key, Lag: lag, UpdatedAt: updated}
	}
	const (
		moving = "every partition with events to handle has moved its checkpoint recently"
		stuck  = "partition 1 has events to handle and has not moved its checkpoint for over 2m0s: " +
			"is its worker pod running, or is a long write transaction holding readers back?"
	)
	tests := []struct {
		name       string
		created    time.Time
		partitions []projection.PartitionProgress
		want       metav1.Condition
	}{{
		name: "the only pod never ran, created a minute ago", created: aMinuteAgo,
		partitions: []projection.PartitionProgress{partition(0, 5, time.Time{})},
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNotStarted,
			Message: "partition 0 has events to handle and has not run yet (Stalled if it has not 2m0s after the Projection's creation)"},
	}, {
		name: "the only pod never ran, created an hour ago", created: anHourAgo,
		partitions: []projection.PartitionProgress{partition(0, 5, time.Time{})},
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonNoProgress,
			Message: "partition 0 has events to handle and has not run since the Projection was created, over 2m0s ago: is its worker pod running?"},
	}, {
		name: "the only pod never ran, empty log", created: anHourAgo,
		partitions: []projection.PartitionProgress{partition(0, 0, time.Time{})},
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNothingToHandle,
			Message: "no partition has events to handle"},
	}, {
		name: "caught up", created: anHourAgo,
		partitions: []projection.PartitionProgress{partition(0, 0, aMinuteAgo), partition(1, 0, anHourAgo)},
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNothingToHandle,
			Message: "no partition has events to handle"},
	}, {
		name: "three of four never ran, created a minute ago", created: aMinuteAgo,
		partitions: []projection.PartitionProgress{partition(0, 5, aMinuteAgo), partition(1, 5, time.Time{}),
			partition(2, 0, time.Time{}), partition(3, 5, time.Time{})},
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNotStarted,
			Message: "partition 1 and 1 more have events to handle and have not run yet (Stalled if one has not 2m0s after the Projection's creation)"},
	}, {
		name: "moving", created: anHourAgo,
		partitions: []projection.PartitionProgress{partition(0, 5, aMinuteAgo), partition(1, 0, anHourAgo)},
		want:       metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonProgressing, Message: moving},
	}, {
		name: "one stuck beside one that never ran", created: aMinuteAgo.Add(-time.Hour),
		partitions: []projection.PartitionProgress{partition(0, 5, time.Time{}), partition(1, 5, anHourAgo)},
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonNoProgress,
			Message: "partition 0 has events to handle and has not run since the Projection was created, over 2m0s ago: is its worker pod running?"},
	}, {
		name: "one stuck beside one moving", created: anHourAgo,
		partitions: []projection.PartitionProgress{partition(0, 5, aMinuteAgo), partition(1, 5, anHourAgo)},
		want:       metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonNoProgress, Message: stuck},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Generation: 2, CreationTimestamp: metav1.NewTime(tc.created)},
				Spec: v1alpha1.ProjectionSpec{Replicas: ptr.To(int32(len(tc.partitions)))}}
			pr := &projection.Progress{Topology: projection.Topology{Generation: 1, TotalPartitions: len(tc.partitions)},
				HeadPosition: 100, Partitions: tc.partitions, Now: now}
			var st v1alpha1.ProjectionStatus
			setStalledCondition(&st, &state{projection: p, progress: pr})
			got := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStalled)
			if got == nil {
				t.Fatal("no Stalled condition")
			}
			tc.want.Type, tc.want.ObservedGeneration = v1alpha1.ConditionStalled, 2
			if diff := cmp.Diff(tc.want, *got, cmpopts.IgnoreFields(metav1.Condition{}, "LastTransitionTime")); diff != "" {
				t.Errorf("Stalled (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCaughtUpStaysTrue: CaughtUp says the projection caught up once, so a
// later reading with lag leaves it True.
func TestCaughtUpStaysTrue(t *testing.T) {
	p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Generation: 1}, Spec: v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](1)}}
	now := time.Now()
	caught := &projection.Progress{Topology: projection.Topology{Generation: 1, TotalPartitions: 1},
		Partitions: []projection.PartitionProgress{{PartitionKey: 0, Position: 5}}, HeadPosition: 5, Now: now}
	r := &ProjectionReconciler{}
	p.Status = r.computeStatus(&state{projection: p, desired: 1, replicas: 1, progress: caught})
	behind := &projection.Progress{Topology: caught.Topology,
		Partitions: []projection.PartitionProgress{{PartitionKey: 0, Position: 5, Lag: 7, LowestPending: 6, UpdatedAt: now}}, HeadPosition: 12, Lag: 7, Now: now}
	st := r.computeStatus(&state{projection: p, desired: 1, replicas: 1, progress: behind})
	var got condition
	for _, c := range st.Conditions {
		if c.Type == v1alpha1.ConditionCaughtUp {
			got = condition{c.Status, c.Reason}
		}
	}
	if diff := cmp.Diff(condition{metav1.ConditionTrue, v1alpha1.ReasonLagReachedZero}, got); diff != "" {
		t.Errorf("CaughtUp after lag returned (-want +got):\n%s", diff)
	}
	if st.Lag != 7 || st.HeadPosition != 12 {
		t.Errorf("lag %d head %d, want 7 and 12", st.Lag, st.HeadPosition)
	}
}

// A pass that read the Projection from a cache that had not yet seen
// CaughtUp turn True keeps the condition as this operator first set it:
// True, at its first time, even when events have been appended since. A
// rebuild starts it over.
func TestCaughtUpSurvivesAStaleRead(t *testing.T) {
	p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Generation: 1, Namespace: "shop", Name: "ledger", UID: "u1"},
		Spec: v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](1)}}
	now := time.Now()
	caught := &projection.Progress{Topology: projection.Topology{Generation: 1, TotalPartitions: 1},
		Partitions: []projection.PartitionProgress{{PartitionKey: 0, Position: 5}}, HeadPosition: 5, Now: now}
	behind := &projection.Progress{Topology: caught.Topology,
		Partitions: []projection.PartitionProgress{{PartitionKey: 0, Position: 5, Lag: 7, LowestPending: 6, UpdatedAt: now}}, HeadPosition: 12, Lag: 7, Now: now}
	r := &ProjectionReconciler{}
	stale := p.DeepCopy() // the cache's copy, before the write below
	p.Status = r.computeStatus(&state{projection: p, desired: 1, replicas: 1, progress: caught})
	first := *meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionCaughtUp)
	if first.Status != metav1.ConditionTrue {
		t.Fatalf("CaughtUp %+v after lag 0, want True", first)
	}

	for name, pr := range map[string]*projection.Progress{"caught up": caught, "behind": behind} {
		st := r.computeStatus(&state{projection: stale.DeepCopy(), desired: 1, replicas: 1, progress: pr})
		got := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionCaughtUp)
		if got == nil || got.Status != metav1.ConditionTrue || !got.LastTransitionTime.Equal(&first.LastTransitionTime) || got.Reason != first.Reason {
			t.Errorf("stale read, %s: CaughtUp %+v, want %+v", name, got, first)
		}
	}

	// Another Projection of the same name (a new UID) starts afresh.
	other := stale.DeepCopy()
	other.UID = "u2"
	st := r.computeStatus(&state{projection: other, desired: 1, replicas: 1, progress: behind})
	if got := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionCaughtUp); got == nil || got.Status == metav1.ConditionTrue {
		t.Errorf("a new Projection of the same name with lag: CaughtUp %+v, want not True", got)
	}
}

// CaughtUp means "has passed what was there": a projection keeping up with
// a steady stream of appends, whose lag never reads 0, turns CaughtUp True
// once every partition has passed the head of the previous reading
// (status.headPosition); one still short of it stays CatchingUp (issue 32).
func TestCaughtUpPassesThePreviousHead(t *testing.T) {
	now := time.Now()
	reading := func(lowestPending int64) *projection.Progress {
		return &projection.Progress{Topology: projection.Topology{Generation: 1, TotalPartitions: 2}, HeadPosition: 130, Lag: 4, Now: now,
			Partitions: []projection.PartitionProgress{
				{PartitionKey: 0, Position: 120, Lag: 2, LowestPending: 125, UpdatedAt: now},
				{PartitionKey: 1, Position: 90, Lag: 2, LowestPending: lowestPending, UpdatedAt: now}}}
	}
	for _, tt := range []struct {
		name          string
		prevHead      int64
		lowestPending int64
		want          condition
	}{
		{"every partition past the previous head", 100, 101, condition{metav1.ConditionTrue, v1alpha1.ReasonLagReachedZero}},
		{"a partition short of the previous head", 100, 95, condition{metav1.ConditionFalse, v1alpha1.ReasonCatchingUp}},
		{"no previous reading: this reading's head", 0, 101, condition{metav1.ConditionFalse, v1alpha1.ReasonCatchingUp}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Generation: 1}, Spec: v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](2)},
				Status: v1alpha1.ProjectionStatus{HeadPosition: tt.prevHead}}
			st := (&ProjectionReconciler{}).computeStatus(&state{projection: p, desired: 2, replicas: 2, progress: reading(tt.lowestPending)})
			c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionCaughtUp)
			if c == nil {
				t.Fatal("no CaughtUp condition")
			}
			if diff := cmp.Diff(tt.want, condition{c.Status, c.Reason}); diff != "" {
				t.Errorf("CaughtUp (-want +got):\n%s\n%s", diff, c.Message)
			}
		})
	}
}

// A run of slow reads becomes Degraded DatabaseSlow once it has lasted the
// grace, not before, and not over a failing worker; a pass whose reads
// finish ends the run.
func TestWeighSlowReads(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC))
	r := &ProjectionReconciler{Clock: clk, SlowReadGrace: time.Minute}
	p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders", UID: "u1"}}
	// pass runs one pass at the fake clock's time plus after: a slow read
	// (slow), a read that finished (!slow), and a worker failing or not;
	// it returns the Degraded condition the status shows.
	pass := func(after time.Duration, slow, failing bool) condition {
		t.Helper()
		clk.SetTime(clk.Now().Add(after))
		s := &state{projection: p}
		if slow {
			s.slowRead = &problem{v1alpha1.ReasonDatabaseSlow, "reading progress: no result within 5s, while the database answers a ping"}
		} else {
			s.progress = &projection.Progress{}
		}
		if failing {
			s.workerFailure = &problem{v1alpha1.ReasonWorkerFailing, "pod orders-0 exited with code 2"}
		}
		if err := r.weighSlowReads(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		var st v1alpha1.ProjectionStatus
		setDegradedCondition(&st, s)
		c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionDegraded)
		return condition{c.Status, c.Reason}
	}
	slowNotYet := condition{metav1.ConditionFalse, v1alpha1.ReasonDatabaseSlow}
	slowDegraded := condition{metav1.ConditionTrue, v1alpha1.ReasonDatabaseSlow}
	workerFails := condition{metav1.ConditionTrue, v1alpha1.ReasonWorkerFailing}
	reconciled := condition{metav1.ConditionFalse, v1alpha1.ReasonReconciled}
	for i, step := range []struct {
		after         time.Duration
		slow, failing bool
		want          condition
	}{
		{0, true, false, slowNotYet},                                // one slow pass: not Degraded
		{30 * time.Second, true, false, slowNotYet},                 // 30s into the run
		{30*time.Second - time.Nanosecond, true, false, slowNotYet}, // just under the grace
		{time.Nanosecond, true, false, slowDegraded},                // the grace has passed
		{10 * time.Second, true, true, workerFails},                 // a failing worker says more
		{10 * time.Second, false, false, reconciled},                // a read finished: the run ends
		{10 * time.Second, true, false, slowNotYet},                 // a new run starts from 0
		{59 * time.Second, true, false, slowNotYet},
		{0, false, true, workerFails},
		{2 * time.Minute, true, false, slowNotYet}, // the run above ended: a new one
	} {
		if got := pass(step.after, step.slow, step.failing); got != step.want {
			t.Errorf("step %d (+%s, slow %t, worker failing %t): Degraded %+v, want %+v", i, step.after, step.slow, step.failing, got, step.want)
		}
	}
}
