// Package v1alpha1 holds the Projection API of group projectionist.dev.
//
// A Projection runs one event-sourcing projection (a name the worker image
// knows) as a StatefulSet whose pods are its partitions: pod ordinal k runs
// partition key k of spec.replicas partitions.
//
// +kubebuilder:object:generate=true
// +groupName=projectionist.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "projectionist.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a runtime.Scheme.
	// apimachinery's, not controller-runtime's (deprecated for API
	// packages): importing the API pulls in no controller machinery.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the API's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Projection{}, &ProjectionList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
