package resources

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

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
