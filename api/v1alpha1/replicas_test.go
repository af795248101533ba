package v1alpha1_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// The one definition of what spec.replicas, spec.suspend and
// spec.autoscaling ask for, which the operator, its metrics and the
// kubectl plugin read.
func TestDesiredPartitions(t *testing.T) {
	type want struct {
		SpecReplicas      int32
		Paused, Suspended bool
		Desired           int32
		Autoscaled        bool
	}
	autoscaling := &v1alpha1.AutoscalingSpec{MaxReplicas: 8}
	chosen := &v1alpha1.AutoscalingStatus{Partitions: 5}
	tests := []struct {
		name   string
		spec   v1alpha1.ProjectionSpec
		status v1alpha1.ProjectionStatus
		want   want
	}{
		{"unset: the default", v1alpha1.ProjectionSpec{}, v1alpha1.ProjectionStatus{},
			want{SpecReplicas: v1alpha1.DefaultReplicas, Desired: v1alpha1.DefaultReplicas}},
		{"spec.replicas", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](3)}, v1alpha1.ProjectionStatus{},
			want{SpecReplicas: 3, Desired: 3}},
		{"0 pauses", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](0)}, v1alpha1.ProjectionStatus{},
			want{Paused: true}},
		{"suspended keeps the count", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](3), Suspend: ptr.To(true)}, v1alpha1.ProjectionStatus{},
			want{SpecReplicas: 3, Suspended: true, Desired: 3}},
		{"autoscaled: the chosen count", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](2), Autoscaling: autoscaling},
			v1alpha1.ProjectionStatus{Autoscaling: chosen}, want{SpecReplicas: 2, Desired: 5, Autoscaled: true}},
		{"autoscaled, suspended: the chosen count kept", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](2), Suspend: ptr.To(true), Autoscaling: autoscaling},
			v1alpha1.ProjectionStatus{Autoscaling: chosen}, want{SpecReplicas: 2, Suspended: true, Desired: 5, Autoscaled: true}},
		{"autoscaled, replicas 0: paused", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](0), Autoscaling: autoscaling},
			v1alpha1.ProjectionStatus{Autoscaling: chosen}, want{Paused: true}},
		{"autoscaling before its first choice: spec.replicas", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](2), Autoscaling: autoscaling},
			v1alpha1.ProjectionStatus{}, want{SpecReplicas: 2, Desired: 2}},
		{"autoscaling removed: spec.replicas again", v1alpha1.ProjectionSpec{Replicas: ptr.To[int32](2)},
			v1alpha1.ProjectionStatus{Autoscaling: chosen}, want{SpecReplicas: 2, Desired: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &v1alpha1.Projection{Spec: tc.spec, Status: tc.status}
			got := want{SpecReplicas: p.SpecReplicas(), Paused: p.Paused(), Suspended: p.Suspended()}
			got.Desired, got.Autoscaled = p.DesiredPartitions()
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
