package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

func TestEstimateETA(t *testing.T) {
	at := func(d time.Duration, lag int64) *reading { return &reading{at: now.Add(d), lag: lag} }
	tests := []struct {
		name        string
		first, last *reading
		want        string
	}{
		{"no reading", nil, nil, "unknown"},
		{"caught up", nil, at(0, 0), "caught up"},
		{"one reading", nil, at(0, 500), "unknown (one reading so far: --watch measures the rate over several)"},
		{"the same reading twice", at(0, 500), at(0, 500), "unknown (one reading so far: --watch measures the rate over several)"},
		{"lag not moving", at(0, 500), at(10*time.Second, 500), "unknown (lag not falling: 500 -> 500 events in 10s)"},
		{"lag growing", at(0, 500), at(5*time.Second, 800), "unknown (lag not falling: 500 -> 800 events in 5s)"},
		{"falling", at(0, 1000), at(10*time.Second, 600), "about 15s (lag fell 1000 -> 600 events in 10s, 40 events/s)"},
		{"caught up during the watch", at(0, 1000), at(10*time.Second, 0), "caught up"},
		{"slow", at(0, 1_000_000), at(time.Minute, 999_400), "about 27h45m40s (lag fell 1000000 -> 999400 events in 1m0s, 10 events/s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, estimateETA(tt.first, tt.last)); diff != "" {
				t.Errorf("estimateETA (-want +got):\n%s", diff)
			}
		})
	}
}

func projection(name string, mutate func(*v1alpha1.Projection)) v1alpha1.Projection {
	p := v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Generation: 2, CreationTimestamp: ago(3 * time.Hour)},
		Spec:       v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](3)},
	}
	if mutate != nil {
		mutate(&p)
	}
	return p
}

func running(p *v1alpha1.Projection) {
	p.Status = v1alpha1.ProjectionStatus{
		Replicas: 3, ReadyReplicas: 3, Partitions: 3, TopologyGeneration: 2, ObservedGeneration: 2,
		HeadPosition: 10500, Lag: 1200, LagSeconds: 35,
		PartitionStatuses: []v1alpha1.PartitionStatus{
			{Partition: 2, Position: 10500, Lag: 0},
			{Partition: 0, Position: 9800, Lag: 1100},
			{Partition: 1, Position: 10490, Lag: 100},
		},
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionCaughtUp, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonCatchingUp, LastTransitionTime: ago(3 * time.Hour), Message: "1200 events to go"},
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAllReplicasReady, LastTransitionTime: ago(5 * time.Minute), Message: "3 of 3 partitions ready"},
			{Type: "Rebuilding", Status: metav1.ConditionFalse, Reason: "Idle", LastTransitionTime: ago(time.Hour)},
			{Type: v1alpha1.ConditionStalled, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonProgressing, LastTransitionTime: ago(90 * time.Second)},
		},
	}
}

func TestFormatStatus(t *testing.T) {
	tests := []struct {
		name string
		p    v1alpha1.Projection
		eta  string
		want string
	}{{
		name: "running, conditions in order, partitions sorted",
		p:    projection("user-count", running),
		eta:  "about 15s",
		want: `Name:           user-count
Namespace:      shop
Projection:     user-count
Suspended:      false
Replicas:       3 desired, 3 pods, 3 ready
Partitions:     3 (topology generation 2)
Head position:  10500
Lag:            1200 events, oldest 35s
ETA:            about 15s

Conditions:
  TYPE        STATUS  REASON             AGE  MESSAGE
  Ready       True    AllReplicasReady   5m   3 of 3 partitions ready
  Stalled     False   CheckpointsMoving  90s
  CaughtUp    False   CatchingUp         3h   1200 events to go
  Rebuilding  False   Idle               60m

Partitions:
    PARTITION  POSITION   LAG
            0      9800  1100
            1     10490   100
            2     10500     0
`,
	}, {
		name: "new, suspended, not yet observed",
		p: projection("revenue", func(p *v1alpha1.Projection) {
			p.Spec.Suspend = ptr.To(true)
			p.Spec.ProjectionName = "revenue_v2"
		}),
		eta: "unknown",
		want: `Name:           revenue
Namespace:      shop
Projection:     revenue_v2
Suspended:      true
Replicas:       3 desired, 0 pods, 0 ready
Partitions:     0 (topology generation 0)
Head position:  0
Lag:            0 events, oldest 0s
ETA:            unknown
Observed:       generation 0 of 2: the operator has not yet reported on the latest spec

Conditions:
  none yet: the operator has not reported on this Projection

Partitions:
  none reported yet
`,
	}, {
		name: "autoscaled: the count chosen, and why; a partition index building",
		p: projection("ledger", func(p *v1alpha1.Projection) {
			running(p)
			p.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: ptr.To[int32](1), MaxReplicas: 4}
			p.Status.Autoscaling = &v1alpha1.AutoscalingStatus{Partitions: 3, Message: "lag 35s is above the target 30s"}
			p.Status.PartitionIndex = &v1alpha1.PartitionIndexStatus{Name: "events_partitions_3_idx", Partitions: 3,
				Phase: v1alpha1.PartitionIndexBuilding, Message: "building with CREATE INDEX CONCURRENTLY"}
			p.Status.PartitionStatuses, p.Status.Conditions = nil, nil
		}),
		eta: "about 15s",
		want: `Name:             ledger
Namespace:        shop
Projection:       ledger
Suspended:        false
Replicas:         3 desired (autoscaled), 3 pods, 3 ready
Autoscaling:      1 to 4 partitions, target lag 30s: lag 35s is above the target 30s
Partitions:       3 (topology generation 2)
Partition index:  events_partitions_3_idx Building: building with CREATE INDEX CONCURRENTLY
Head position:    10500
Lag:              1200 events, oldest 35s
ETA:              about 15s

Conditions:
  none yet: the operator has not reported on this Projection

Partitions:
  none reported yet
`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, formatStatus(&tt.p, now, tt.eta)); diff != "" {
				t.Errorf("formatStatus (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFormatList(t *testing.T) {
	items := []v1alpha1.Projection{
		projection("user-count", running),
		projection("revenue", func(p *v1alpha1.Projection) {
			p.Namespace = "billing"
			p.Spec.Suspend = ptr.To(true)
			p.Status.Partitions = 2
			p.Status.Lag = 40
			p.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonSuspended}}
		}),
		projection("fresh", nil),
	}
	tests := []struct {
		name string
		all  bool
		want string
	}{{
		name: "one namespace",
		want: `NAME         READY     STATUS             PARTITIONS   LAG    SUSPENDED   AGE
user-count   True      AllReplicasReady   3            1200   false       3h
revenue      False     Suspended          2            40     true        3h
fresh        Unknown                      0            0      false       3h
`,
	}, {
		name: "all namespaces",
		all:  true,
		want: `NAMESPACE   NAME         READY     STATUS             PARTITIONS   LAG    SUSPENDED   AGE
shop        user-count   True      AllReplicasReady   3            1200   false       3h
billing     revenue      False     Suspended          2            40     true        3h
shop        fresh        Unknown                      0            0      false       3h
`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, formatList(items, now, tt.all)); diff != "" {
				t.Errorf("formatList (-want +got):\n%s", diff)
			}
		})
	}
}
