package resources

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/worker"
)

// The worker container's name and the name of its HTTP port. The port
// number, the probes' paths, the arguments and the environment come from
// the operator-to-worker contract in package worker (worker.Args,
// worker.Port, worker.PathReadyz, worker.Env*).
const (
	ContainerName = "worker"
	PortName      = "http"
)

// Defaults of the spec's optional fields, matching the CRD's defaults, for
// a Projection that skipped the API server's defaulting (as in tests). The
// library's values: a test in api/v1alpha1 holds the CRD markers to them.
const (
	DefaultSecretKey    = "dsn"
	DefaultBatchSize    = projection.DefaultBatchSize
	DefaultPollInterval = projection.DefaultPollInterval
)

// Pod settings.
const (
	// nonRootID is the user and group the worker runs as: distroless's
	// "nonroot".
	nonRootID = 65532
	// terminationGracePeriodSeconds leaves the worker's 25s shutdown bound
	// (SHUTDOWN_TIMEOUT's default) 5s to spare before SIGKILL.
	terminationGracePeriodSeconds = 30
	// readinessPeriodSeconds is short so that readiness follows a worker
	// going idle (its key is outside a smaller topology) or losing the
	// database within seconds: the Projection's Ready condition and a
	// scale-down wait on it.
	readinessPeriodSeconds = 2
	// podIndexField is the pod's ordinal, which the StatefulSet controller
	// puts in this label since Kubernetes 1.28. On an older cluster the
	// variable is empty and the worker falls back to POD_NAME's suffix.
	podIndexField = "metadata.labels['" + appsv1.PodIndexLabel + "']"
)

// reservedEnv are variables spec.env must not set: the operator sets them
// (or, for TOTAL_PARTITIONS, must not), and another value would break the
// operator's contract with the workers: the database and projection whose
// topology it switches, the partition identity, the partition count
// (DESIGN rule 5: the workers follow the database) and the probes' port.
var reservedEnv = map[string]string{
	worker.EnvDatabaseURL:     "the workers must use the database the operator switches the topology in; set spec.database.secretRef",
	worker.EnvProjection:      "the workers must run the projection the operator manages; set spec.projectionName",
	worker.EnvPartitionKey:    "the partition key is the pod's ordinal",
	worker.EnvPodName:         "the partition key is the pod's ordinal",
	worker.EnvTotalPartitions: "the workers follow the partition count the operator records in the database; set spec.replicas",
	worker.EnvHTTPAddr:        "the probes and the Service use port " + strconv.Itoa(worker.Port),
}

// StatefulSet is the Projection's worker StatefulSet with the given replica
// count: pod k runs partition key k.
//
// replicas is an argument rather than spec.replicas because the reconciler
// changes it only after switching the topology in the database. The pod
// template does not depend on it, so scaling never rolls the pods.
//
// The errors match [ErrInvalidName] (see [ValidateName]), [ErrNoImage], or
// [ErrInvalidSpec] (an unknown spec.errorPolicy; spec.env setting a
// variable the operator owns: DATABASE_URL, PROJECTION, PARTITION_KEY,
// POD_NAME, TOTAL_PARTITIONS or HTTP_ADDR; spec.podLabels setting a
// selector label; a spec.volumeMounts entry naming no volume).
func StatefulSet(p *v1alpha1.Projection, replicas int32, opts Options) (*appsv1ac.StatefulSetApplyConfiguration, error) {
	if err := ValidateName(p.Name); err != nil {
		return nil, err
	}
	image := p.Spec.Image
	if image == "" {
		image = opts.WorkerImage
	}
	if image == "" {
		return nil, ErrNoImage
	}
	env, err := workerEnv(p)
	if err != nil {
		return nil, err
	}

	container := corev1ac.Container().
		WithName(ContainerName).
		WithImage(image).
		// The image's own entrypoint: a user's worker.Main image keeps its
		// binary wherever its Dockerfile put it.
		WithArgs(worker.Args()...).
		// A worker that exits on an error (an unknown projection, a poison
		// event under the Stop policy) logs it last; the kubelet copies the
		// log's tail into the termination message, which the operator
		// shows in the Degraded condition.
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError).
		WithEnv(env...).
		WithPorts(corev1ac.ContainerPort().
			WithName(PortName).
			WithContainerPort(worker.Port).
			WithProtocol(corev1.ProtocolTCP)).
		WithLivenessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().
				WithPath(worker.PathHealthz).
				WithPort(intstr.FromString(PortName)))).
		WithReadinessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().
				WithPath(worker.PathReadyz).
				WithPort(intstr.FromString(PortName))).
			WithPeriodSeconds(readinessPeriodSeconds)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithRunAsNonRoot(true).
			WithReadOnlyRootFilesystem(true).
			WithAllowPrivilegeEscalation(false).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))
	if p.Spec.ImagePullPolicy != "" {
		container.WithImagePullPolicy(p.Spec.ImagePullPolicy)
	}
	// An empty struct would make the operator own resources: {}; leave the
	// field out instead.
	if r := p.Spec.Resources; len(r.Limits) > 0 || len(r.Requests) > 0 || len(r.Claims) > 0 {
		res, err := convert[corev1ac.ResourceRequirementsApplyConfiguration](r)
		if err != nil {
			return nil, fmt.Errorf("converting spec.resources: %w", err)
		}
		container.WithResources(res)
	}

	for i, m := range p.Spec.VolumeMounts {
		if !slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
			return nil, fmt.Errorf("%w: spec.volumeMounts[%d] mounts volume %q, which spec.volumes does not have", ErrInvalidSpec, i, m.Name)
		}
	}
	if err := convertEach(container.WithVolumeMounts, "spec.volumeMounts", p.Spec.VolumeMounts); err != nil {
		return nil, err
	}

	// WithContainers copies the container: it is complete from here on.
	pod := corev1ac.PodSpec().
		WithContainers(container).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(nonRootID).
			WithRunAsGroup(nonRootID).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithTerminationGracePeriodSeconds(terminationGracePeriodSeconds).
		// The worker needs no Service variables.
		WithEnableServiceLinks(false)
	if p.Spec.ServiceAccountName != "" {
		// The user's service account decides whether its token is
		// mounted (its automountServiceAccountToken, default true).
		pod.WithServiceAccountName(p.Spec.ServiceAccountName)
	} else {
		// The stock worker talks to PostgreSQL only, never to the API
		// server.
		pod.WithAutomountServiceAccountToken(false)
	}
	for _, s := range p.Spec.ImagePullSecrets {
		pod.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(s.Name))
	}
	if err := convertEach(pod.WithVolumes, "spec.volumes", p.Spec.Volumes); err != nil {
		return nil, err
	}
	if err := convertEach(pod.WithTopologySpreadConstraints, "spec.topologySpreadConstraints", p.Spec.TopologySpreadConstraints); err != nil {
		return nil, err
	}
	if len(p.Spec.NodeSelector) > 0 {
		pod.WithNodeSelector(p.Spec.NodeSelector)
	}
	if err := convertEach(pod.WithTolerations, "spec.tolerations", p.Spec.Tolerations); err != nil {
		return nil, err
	}
	if p.Spec.Affinity != nil {
		a, err := convert[corev1ac.AffinityApplyConfiguration](p.Spec.Affinity)
		if err != nil {
			return nil, fmt.Errorf("converting spec.affinity: %w", err)
		}
		pod.WithAffinity(a)
	}
	if p.Spec.PriorityClassName != "" {
		pod.WithPriorityClassName(p.Spec.PriorityClassName)
	}

	podLabels, err := podLabels(p)
	if err != nil {
		return nil, err
	}
	template := corev1ac.PodTemplateSpec().
		WithLabels(podLabels).
		WithSpec(pod)
	if len(p.Spec.PodAnnotations) > 0 {
		template.WithAnnotations(p.Spec.PodAnnotations)
	}

	return appsv1ac.StatefulSet(StatefulSetName(p), p.Namespace).
		WithLabels(Labels(p)).
		WithOwnerReferences(ownerReference(p)).
		WithSpec(appsv1ac.StatefulSetSpec().
			WithReplicas(replicas).
			// One broken pod must not hold up the others' partitions.
			WithPodManagementPolicy(appsv1.ParallelPodManagement).
			WithServiceName(ServiceName(p)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(p))).
			WithTemplate(template)), nil
}

// podLabels are the pod template's labels: spec.podLabels plus [Labels],
// which spec.podLabels must not set (the CRD refuses them too).
func podLabels(p *v1alpha1.Projection) (map[string]string, error) {
	own := Labels(p)
	if len(p.Spec.PodLabels) == 0 {
		return own, nil
	}
	l := make(map[string]string, len(own)+len(p.Spec.PodLabels))
	for _, k := range slices.Sorted(maps.Keys(p.Spec.PodLabels)) {
		if _, ok := own[k]; ok {
			return nil, fmt.Errorf("%w: spec.podLabels sets %s, which the operator sets to select the worker pods", ErrInvalidSpec, k)
		}
		l[k] = p.Spec.PodLabels[k]
	}
	maps.Copy(l, own)
	return l, nil
}

// workerEnv is the worker container's environment: the operator's
// variables, then spec.env. An entry replaces any earlier one of the same
// name rather than following it, since server-side apply rejects
// duplicate names in env; the effect is Kubernetes' "a later entry wins".
func workerEnv(p *v1alpha1.Projection) ([]*corev1ac.EnvVarApplyConfiguration, error) {
	secretKey := p.Spec.Database.SecretRef.Key
	if secretKey == "" {
		secretKey = DefaultSecretKey
	}
	batchSize := strconv.Itoa(DefaultBatchSize)
	if p.Spec.BatchSize != nil {
		batchSize = strconv.Itoa(int(*p.Spec.BatchSize))
	}
	pollInterval := DefaultPollInterval.String()
	if p.Spec.PollInterval != nil {
		pollInterval = p.Spec.PollInterval.Duration.String()
	}
	errorPolicy, err := workerErrorPolicy(p.Spec.ErrorPolicy)
	if err != nil {
		return nil, err
	}

	env := []*corev1ac.EnvVarApplyConfiguration{
		corev1ac.EnvVar().WithName(worker.EnvDatabaseURL).WithValueFrom(corev1ac.EnvVarSource().
			WithSecretKeyRef(corev1ac.SecretKeySelector().
				WithName(p.Spec.Database.SecretRef.Name).
				WithKey(secretKey))),
		corev1ac.EnvVar().WithName(worker.EnvProjection).WithValue(p.EffectiveProjectionName()),
		corev1ac.EnvVar().WithName(worker.EnvBatchSize).WithValue(batchSize),
		corev1ac.EnvVar().WithName(worker.EnvPollInterval).WithValue(pollInterval),
		corev1ac.EnvVar().WithName(worker.EnvErrorPolicy).WithValue(errorPolicy),
		corev1ac.EnvVar().WithName(worker.EnvPartitionKey).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath(podIndexField))),
		corev1ac.EnvVar().WithName(worker.EnvPodName).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.name"))),
		corev1ac.EnvVar().WithName(worker.EnvHTTPAddr).WithValue(":" + strconv.Itoa(worker.Port)),
		corev1ac.EnvVar().WithName(worker.EnvLogFormat).WithValue(string(worker.LogFormatJSON)),
	}
	for i, e := range p.Spec.Env {
		if why, ok := reservedEnv[e.Name]; ok {
			return nil, fmt.Errorf("%w: spec.env[%d] sets %s, which the operator owns: %s", ErrInvalidSpec, i, e.Name, why)
		}
		v, err := convert[corev1ac.EnvVarApplyConfiguration](e)
		if err != nil {
			return nil, fmt.Errorf("converting spec.env[%d]: %w", i, err)
		}
		env = slices.DeleteFunc(env, func(o *corev1ac.EnvVarApplyConfiguration) bool { return *o.Name == e.Name })
		env = append(env, v)
	}
	return env, nil
}

// workerErrorPolicy is the worker's ERROR_POLICY value of an error policy.
func workerErrorPolicy(p v1alpha1.ErrorPolicy) (string, error) {
	switch p {
	case "", v1alpha1.ErrorPolicyStop:
		return projection.ErrorPolicyStop.String(), nil
	case v1alpha1.ErrorPolicySkip:
		return projection.ErrorPolicySkip.String(), nil
	case v1alpha1.ErrorPolicyDeadLetter:
		return projection.ErrorPolicyDeadLetter.String(), nil
	}
	return "", fmt.Errorf("%w: spec.errorPolicy %q: must be Stop, Skip or DeadLetter", ErrInvalidSpec, p)
}

// convertEach converts every element of a spec list (named field, for
// errors) into its apply configuration and adds it with add, such as
// pod.WithVolumes.
func convertEach[T, A any, R any](add func(...*A) R, field string, in []T) error {
	for i := range in {
		v, err := convert[A](in[i])
		if err != nil {
			return fmt.Errorf("converting %s[%d]: %w", field, i, err)
		}
		add(v)
	}
	return nil
}

// convert turns a typed API value of the spec into the apply configuration
// of the same type. Both share their JSON form, and the apply
// configuration keeps exactly the fields the value sets, since the API
// types omit their empty optional fields.
func convert[T any](in any) (*T, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		return nil, err
	}
	return out, nil
}
