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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "projectionist.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
