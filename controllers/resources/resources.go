// Package resources builds the objects a Projection owns (the worker
// StatefulSet and its headless Service) as server-side apply
// configurations.
//
// Every function here is pure: it reads the Projection and returns the
// desired object, with no client, no I/O, no clock and no randomness, so the
// same Projection always yields the same object and an apply of it is a
// no-op when nothing changed. The reconciler applies the results with field
// owner [FieldOwner].
//
// The partition count never enters the pod template (DESIGN rule 5): the
// replica count is a separate argument of [StatefulSet], and the workers
// follow the count the operator records in the database, so scaling a
// Projection never rolls its pods.
package resources

import (
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// FieldOwner is the field manager of every apply of these objects.
const FieldOwner = "projectionist"

// Options carry operator-wide settings.
type Options struct {
	// WorkerImage is the worker container image of a Projection without
	// spec.image. Defaults to none: such a Projection gets [ErrNoImage].
	WorkerImage string
}

// MaxNameLength is the longest Projection name the builders accept. The
// StatefulSet controller labels each pod controller-revision-hash=<name>-<hash>
// with a hash of up to 10 characters, and a label value holds at most 63,
// so a longer StatefulSet name creates no pods (kubernetes/kubernetes#64023).
// The pod names (<name>-<ordinal>, ordinal < 1024) and the Service name
// (<name>-workers) then fit in a 63-character DNS label too.
const MaxNameLength = 52

// Errors of the builders. Each is wrapped with the details.
var (
	// ErrInvalidName: the Projection's name cannot name its children (see
	// [ValidateName]).
	ErrInvalidName = errors.New("invalid projection name")
	// ErrNoImage: neither spec.image nor Options.WorkerImage is set.
	ErrNoImage = errors.New("no worker image: spec.image is empty and the operator has no default worker image")
	// ErrInvalidSpec: a spec value the API server's validation should have
	// rejected, or a spec.env entry that would override what the operator
	// owns.
	ErrInvalidSpec = errors.New("invalid projection spec")
)

// Label keys and values on the children.
const (
	LabelName       = "app.kubernetes.io/name"
	LabelInstance   = "app.kubernetes.io/instance"
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	LabelComponent  = "app.kubernetes.io/component"
	LabelProjection = "projectionist.dev/projection"

	// NameWorker is the app.kubernetes.io/name of the worker pods.
	NameWorker = "projectionist-worker"
)

// ValidateName says whether a Projection's name can name its children: a
// DNS-1035 label (lowercase letters, digits and '-', starting with a
// letter, as a Service name must) of at most [MaxNameLength] characters.
// [StatefulSet] calls it; the errors match [ErrInvalidName].
func ValidateName(name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w %q: at most %d characters, since the StatefulSet's pods carry a label of its name plus an 11-character revision hash", ErrInvalidName, name, MaxNameLength)
	}
	if msgs := validation.IsDNS1035Label(name); len(msgs) > 0 {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, name, msgs[0])
	}
	return nil
}

// StatefulSetName is the name of the Projection's StatefulSet: the
// Projection's own, so that pod "user-count-3" runs partition 3 of
// Projection "user-count".
func StatefulSetName(p *v1alpha1.Projection) string { return p.Name }

// ServiceName is the name of the Projection's headless Service: the
// Projection's name plus "-workers", which leaves the plain name free for
// a Service of the user's own (say, one in front of the read model).
func ServiceName(p *v1alpha1.Projection) string { return p.Name + "-workers" }

// SelectorLabels select the Projection's worker pods. They are the
// StatefulSet's selector, which is immutable: never change them.
func SelectorLabels(p *v1alpha1.Projection) map[string]string {
	return map[string]string{
		LabelName:       NameWorker,
		LabelInstance:   p.Name,
		LabelProjection: p.Name,
	}
}

// Labels are the labels of the Projection's children and of its pods:
// [SelectorLabels] plus the managed-by and component labels.
func Labels(p *v1alpha1.Projection) map[string]string {
	l := SelectorLabels(p)
	l[LabelManagedBy] = "projectionist"
	l[LabelComponent] = "worker"
	return l
}

// Selector is [SelectorLabels] as a label selector string, for
// status.selector (the scale subresource, kubectl scale, HPA).
func Selector(p *v1alpha1.Projection) string {
	return metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: SelectorLabels(p)})
}

// ownerReference makes the Projection the children's controller, so that
// they are garbage-collected with it and their events requeue it.
func ownerReference(p *v1alpha1.Projection) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(v1alpha1.GroupVersion.String()).
		WithKind("Projection").
		WithName(p.Name).
		WithUID(p.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}
