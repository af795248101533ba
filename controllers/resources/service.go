package resources

import (
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"k8s.io/utils/ptr"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/worker"
)

// Service is the Projection's headless Service: the StatefulSet's
// governing Service, giving each worker pod a DNS name, and the target of
// metrics scraping. It publishes not-ready pods too, since an idle or
// disconnected worker, the one most worth looking at, is not ready.
//
// Service does not check the name; [StatefulSet], built first, does.
func Service(p *v1alpha1.Projection) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(ServiceName(p), p.Namespace).
		WithLabels(Labels(p)).
		WithOwnerReferences(ownerReference(p)).
		WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			WithPublishNotReadyAddresses(true).
			WithSelector(SelectorLabels(p)).
			WithPorts(corev1ac.ServicePort().
				WithName(PortName).
				WithProtocol(corev1.ProtocolTCP).
				WithPort(worker.Port).
				WithTargetPort(intstr.FromString(PortName))))
}

// PodDisruptionBudgetEnabled says whether the Projection keeps a
// PodDisruptionBudget: unless spec.podDisruptionBudget.enabled is false.
func PodDisruptionBudgetEnabled(p *v1alpha1.Projection) bool {
	b := p.Spec.PodDisruptionBudget
	return b == nil || ptr.Deref(b.Enabled, true)
}

// PodDisruptionBudget is the worker pods' PodDisruptionBudget, named like
// the StatefulSet: spec.podDisruptionBudget.maxUnavailable pods at a time
// (1 by default). Pods that are not ready may always be evicted
// (unhealthyPodEvictionPolicy AlwaysAllow): a crash-looping worker must
// not block a node drain, and its partition makes no progress anyway.
func PodDisruptionBudget(p *v1alpha1.Projection) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	maxUnavailable := intstr.FromInt32(1)
	if b := p.Spec.PodDisruptionBudget; b != nil && b.MaxUnavailable != nil {
		maxUnavailable = *b.MaxUnavailable
	}
	return policyv1ac.PodDisruptionBudget(StatefulSetName(p), p.Namespace).
		WithLabels(Labels(p)).
		WithOwnerReferences(ownerReference(p)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(maxUnavailable).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(p))).
			WithUnhealthyPodEvictionPolicy(policyv1.AlwaysAllow))
}
