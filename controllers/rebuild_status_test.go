package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
)

// setRebuildStatus: each phase's condition and message, the replay's rate
// and ETA from two readings, and Replaying ending in Rebuilt once every
// partition has passed the previous reading's head, also under steady
// appends, but not on the replay's first reading.
func TestSetRebuildStatus(t *testing.T) {
	tenSecondsAgo := metav1.NewTime(time.Now().Add(-10 * time.Second))
	progress := func(lag int64, positions ...int64) *projection.Progress {
		pr := &projection.Progress{Topology: projection.Topology{Generation: 2, TotalPartitions: len(positions)}, HeadPosition: 5000, Lag: lag}
		for k, pos := range positions {
			pp := projection.PartitionProgress{PartitionKey: k, Position: pos}
			if pos < pr.HeadPosition {
				pp.LowestPending = pos + 1
			}
			pr.Partitions = append(pr.Partitions, pp)
		}
		return pr
	}
	// replaying is a replay that had replayed events at the last reading,
	// ten seconds ago, and has processed now.
	replaying := func(replayed, processed int64) rebuildState {
		return rebuildState{status: v1alpha1.RebuildStatus{Token: "t", Phase: v1alpha1.RebuildReplaying, EventsReplayed: replayed, ObservedAt: &tenSecondsAgo},
			phaseBefore: v1alpha1.RebuildReplaying, eventsProcessed: &processed}
	}
	tests := []struct {
		name     string
		rs       rebuildState
		progress *projection.Progress
		// prevHead is status.headPosition before the pass.
		prevHead  int64
		wantPhase v1alpha1.RebuildPhase
		want      metav1.Condition
	}{{
		name:      "stopping",
		rs:        rebuildState{status: v1alpha1.RebuildStatus{Token: "t", Phase: v1alpha1.RebuildStopping}, podsLeft: 2},
		wantPhase: v1alpha1.RebuildStopping,
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRebuildStopping,
			Message: `rebuild "t": stopping the worker pods before the reset (2 left)`},
	}, {
		name: "waiting while suspended",
		rs: rebuildState{status: v1alpha1.RebuildStatus{Token: "t", Phase: v1alpha1.RebuildStopping}, podsLeft: -1,
			waiting: &problem{v1alpha1.ReasonSuspended, "rebuild \"t\" waits"}},
		wantPhase: v1alpha1.RebuildStopping,
		want:      metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonSuspended, Message: `rebuild "t" waits`},
	}, {
		name:      "resetting, the hook failing",
		rs:        rebuildState{status: v1alpha1.RebuildStatus{Token: "t", Phase: v1alpha1.RebuildResetting}, lastError: "table gone"},
		wantPhase: v1alpha1.RebuildResetting,
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRebuildResetting,
			Message: `rebuild "t": reset requested; the first worker to start resets the read model and the checkpoints; its Reset hook failed, and the workers retry: table gone`},
	}, {
		name:      "replaying: rate and ETA from the last reading",
		rs:        replaying(1000, 2000),
		progress:  progress(3000, 2500, 1500),
		wantPhase: v1alpha1.RebuildReplaying,
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRebuildReplaying,
			Message: `rebuild "t": replaying: position 1500 of head 5000, lag 3000, 2000 events replayed, 99 events/s, ETA 30s`},
	}, {
		name:      "replaying reaches lag 0",
		rs:        replaying(4000, 5000),
		progress:  progress(0, 5000, 5000),
		wantPhase: v1alpha1.RebuildRebuilt,
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonRebuilt,
			Message: `rebuild "t" done: 5000 events replayed, caught up with the log's head at position 5000`},
	}, {
		// Other events keep being appended: the lag is never 0, but every
		// partition has passed the previous reading's head (issue 32).
		name:      "replaying passes the previous head under steady appends",
		rs:        replaying(4000, 5000),
		prevHead:  4900,
		progress:  progress(150, 4950, 4990),
		wantPhase: v1alpha1.RebuildRebuilt,
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonRebuilt,
			Message: `rebuild "t" done: 5000 events replayed, caught up with the log's head at position 4900`},
	}, {
		name:      "replaying, a partition short of the previous head",
		rs:        replaying(4000, 5000),
		prevHead:  4900,
		progress:  progress(150, 4950, 4800),
		wantPhase: v1alpha1.RebuildReplaying,
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRebuildReplaying,
			Message: `rebuild "t": replaying: position 4800 of head 5000, lag 150, 5000 events replayed, 99 events/s, ETA 2s`},
	}, {
		name: "the replay's first reading: its previous head may predate the reset",
		rs: rebuildState{status: v1alpha1.RebuildStatus{Token: "t", Phase: v1alpha1.RebuildReplaying},
			phaseBefore: v1alpha1.RebuildResetting, eventsProcessed: ptr.To[int64](5000)},
		progress:  progress(0, 5000, 5000),
		wantPhase: v1alpha1.RebuildReplaying,
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRebuildReplaying,
			Message: `rebuild "t": replaying: position 5000 of head 5000, lag 0, 5000 events replayed`},
	}, {
		name:      "failed",
		rs:        rebuildState{status: v1alpha1.RebuildStatus{Token: "t", Phase: v1alpha1.RebuildFailed, Message: "no hook"}},
		wantPhase: v1alpha1.RebuildFailed,
		want:      metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonResetNotSupported, Message: "no hook"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := tt.rs
			s := &state{projection: &v1alpha1.Projection{Status: v1alpha1.ProjectionStatus{HeadPosition: tt.prevHead}}, rebuild: &rs, progress: tt.progress}
			var st v1alpha1.ProjectionStatus
			setRebuildStatus(&st, s)
			if st.Rebuild == nil || st.Rebuild.Phase != tt.wantPhase {
				t.Fatalf("status.rebuild %+v, want phase %s", st.Rebuild, tt.wantPhase)
			}
			got := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionRebuilding)
			tt.want.Type = v1alpha1.ConditionRebuilding
			if diff := cmp.Diff(&tt.want, got, cmpopts.IgnoreFields(metav1.Condition{}, "LastTransitionTime")); diff != "" {
				t.Errorf("Rebuilding (-want +got):\n%s", diff)
			}
			if tt.wantPhase == v1alpha1.RebuildRebuilt && st.Rebuild.CompletedAt == nil {
				t.Error("Rebuilt without completedAt")
			}
		})
	}
}

// rebuildActive: a token not yet rebuilt or failed is active; the same
// token again, an empty one, or one done, is not.
func TestRebuildActive(t *testing.T) {
	for _, tt := range []struct {
		token string
		prev  *v1alpha1.RebuildStatus
		want  string
	}{
		{"", nil, ""},
		{"a", nil, "a"},
		{"a", &v1alpha1.RebuildStatus{Token: "a", Phase: v1alpha1.RebuildReplaying}, "a"},
		{"a", &v1alpha1.RebuildStatus{Token: "a", Phase: v1alpha1.RebuildRebuilt}, ""},
		{"a", &v1alpha1.RebuildStatus{Token: "a", Phase: v1alpha1.RebuildFailed}, ""},
		{"b", &v1alpha1.RebuildStatus{Token: "a", Phase: v1alpha1.RebuildRebuilt}, "b"},
		{"", &v1alpha1.RebuildStatus{Token: "a", Phase: v1alpha1.RebuildReplaying}, ""},
	} {
		p := &v1alpha1.Projection{Spec: v1alpha1.ProjectionSpec{RebuildToken: tt.token}, Status: v1alpha1.ProjectionStatus{Rebuild: tt.prev}}
		if got := rebuildActive(p); got != tt.want {
			t.Errorf("rebuildActive(token %q, status %+v) = %q, want %q", tt.token, tt.prev, got, tt.want)
		}
	}
}
