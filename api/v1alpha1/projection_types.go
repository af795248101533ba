package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// MaxReplicas bounds spec.replicas: the library's maximum partition count.
const MaxReplicas = 1024

// ErrorPolicy says what a worker does with an event whose handler fails.
// +kubebuilder:validation:Enum=Stop;Skip;DeadLetter
type ErrorPolicy string

const (
	// ErrorPolicyStop stops the partition with an error naming the event;
	// the pod restarts and retries it. Nothing is skipped.
	ErrorPolicyStop ErrorPolicy = "Stop"
	// ErrorPolicySkip logs the event, counts it in a metric and goes on.
	ErrorPolicySkip ErrorPolicy = "Skip"
	// ErrorPolicyDeadLetter records the event and its error in the
	// projection_dead_letters table, in the batch's transaction, and goes on.
	ErrorPolicyDeadLetter ErrorPolicy = "DeadLetter"
)

// DeletionPolicy says what deleting a Projection does to its projection's
// rows in the database.
// +kubebuilder:validation:Enum=Retain;Forget
type DeletionPolicy string

const (
	// DeletionRetain keeps the topology, checkpoints and dead letters and
	// only releases the projection name, so that a Projection created
	// later with the same projectionName resumes where this one was.
	DeletionRetain DeletionPolicy = "Retain"
	// DeletionForget deletes them, as `projectionist forget` does.
	DeletionForget DeletionPolicy = "Forget"
)

// Finalizer is on every Projection so that its deletion releases the
// projection name in the database (and, with spec.deletionPolicy Forget,
// deletes the projection's rows) before the Projection is gone.
const Finalizer = "projectionist.dev/release-projection-name"

// SecretKeySelector names a key of a Secret in the Projection's namespace.
type SecretKeySelector struct {
	// name is the Secret's name, in the Projection's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key is the Secret's key whose value is the PostgreSQL connection
	// string (a URL or key=value DSN). Defaults to "dsn".
	// +optional
	// +kubebuilder:default=dsn
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// DatabaseSpec says how to reach the PostgreSQL database holding the events,
// the checkpoints and the read models.
type DatabaseSpec struct {
	// secretRef names the Secret key holding the connection string. The
	// operator reads it to switch the topology and report lag; the worker
	// pods receive it as DATABASE_URL. It never appears in status, events or
	// logs.
	// +required
	SecretRef SecretKeySelector `json:"secretRef"`
}

// ProjectionSpec is the desired state of a Projection.
// +kubebuilder:validation:XValidation:rule="has(self.projectionName) == has(oldSelf.projectionName) && (!has(self.projectionName) || self.projectionName == oldSelf.projectionName)",message="projectionName is immutable: it names the projection's checkpoints in the database, and changing it would start the projection over under a new name",fieldPath=".projectionName",reason="FieldValueForbidden"
type ProjectionSpec struct {
	// projectionName is the projection the workers run and the name of its
	// checkpoints in the database: one of the projections built into the
	// worker image (the stock image has user_count, revenue and
	// activity_log). Defaults to metadata.name. Immutable. Letters, digits,
	// '_', '-' and '.', at most 128 characters.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]+$`
	ProjectionName string `json:"projectionName,omitempty"`

	// replicas is the number of partitions, one worker pod each. Changing it
	// rescales exactly (no event skipped or applied twice) without
	// restarting running pods. 0 pauses the projection and keeps its
	// partition count in the database. Defaults to 1 (the library's
	// projection.DefaultTotalPartitions); 0 to 1024.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Maximum=1024
	Replicas *int32 `json:"replicas,omitempty"`

	// suspend stops every worker pod while keeping spec.replicas and the
	// partition count in the database: setting it back to false (or
	// removing it) brings the pods back with no topology change. The
	// Projection is then Ready False with reason Suspended. Defaults to
	// false.
	// +optional
	Suspend *bool `json:"suspend,omitempty"`

	// deletionPolicy says what deleting this Projection does in the
	// database. A projectionName belongs, per database, to the first
	// Projection that runs it (recorded with the topology); another
	// Projection naming it is Degraded with reason ProjectionNameInUse and
	// runs no pods. Deletion releases the name either way (a finalizer
	// waits for it, at most 5 minutes while the database or Secret cannot
	// be reached). Retain (the default) keeps the topology, checkpoints and
	// dead letters, so that a Projection naming it later resumes where
	// this one was; Forget deletes them, as `projectionist forget` does,
	// so that one naming it later starts from the beginning of the log.
	// Neither touches the read model's own tables: they are the
	// projection's, drop them yourself.
	// +optional
	// +kubebuilder:default=Retain
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// rebuildToken asks for a rebuild of the read model from the beginning
	// of the log: whenever it is set to a value other than the last
	// rebuild's (status.rebuild.token), the operator stops the worker pods
	// and waits until none runs, asks for a reset in the database, and
	// starts the pods again; the first worker to start runs the
	// projection's Reset hook (projection.Resetter), which clears the read
	// model in the transaction that deletes the checkpoints, and the
	// workers replay every event exactly once. The partition count is
	// kept. A projection without the hook is not touched: the Rebuilding
	// condition turns False with reason ResetNotSupported. Any value will
	// do (a date, a counter, a reason); removing it does nothing. While
	// the Projection is suspended or has 0 replicas the rebuild waits.
	// Defaults to none; at most 63 printable ASCII characters.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[ -~]*$`
	RebuildToken string `json:"rebuildToken,omitempty"`

	// deadLetterAction retries or discards dead letters (errorPolicy
	// DeadLetter) through the operator, so that whoever may patch the
	// Projection can deal with them without the connection string: each
	// new token runs the action once, and status.deadLetterAction reports
	// the outcome. A retry hands the events back to their partitions'
	// workers, which apply each in a transaction of its own through the
	// handler and delete the dead letter only if it succeeds. The kubectl
	// plugin's dead-letters retry and discard set it.
	// +optional
	DeadLetterAction *DeadLetterAction `json:"deadLetterAction,omitempty"`

	// autoscaling lets the operator choose the partition count between
	// minReplicas and maxReplicas from the measured lag and throughput,
	// through the same exact online rescaling as spec.replicas. While it is
	// set, spec.replicas is the user's only to pause: 0 pauses the
	// projection, any other value is ignored (status.autoscaling says the
	// count in use). Removing it hands the count back to spec.replicas.
	// Defaults to none: the count is spec.replicas.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// podDisruptionBudget configures the PodDisruptionBudget the operator
	// keeps for the worker pods, named like the Projection, so that a node
	// drain or a cluster autoscaler takes them down a few at a time: each
	// evicted pod pauses its partition until it is rescheduled. Defaults to
	// one with maxUnavailable 1.
	// +optional
	PodDisruptionBudget *PodDisruptionBudgetSpec `json:"podDisruptionBudget,omitempty"`

	// batchSize is the most events a partition handles in one transaction.
	// Defaults to 100 (the library's projection.DefaultBatchSize); 1 to
	// 10000.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	BatchSize *int32 `json:"batchSize,omitempty"`

	// pollInterval is how long a caught-up partition waits before looking
	// for new events, as a Go duration ("100ms", "2s", "1m30s"). Defaults
	// to 100ms (the library's projection.DefaultPollInterval); 1ms to 1h.
	// +optional
	// +kubebuilder:default="100ms"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('1ms') && duration(self) <= duration('1h'))",message="pollInterval must be between 1ms and 1h"
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`

	// errorPolicy is what a worker does with an event whose handler fails:
	// Stop (the partition stops with an error naming the event and retries
	// it after the pod restarts), Skip (log, count and go on) or DeadLetter
	// (record it in projection_dead_letters and go on). Defaults to Stop.
	// +optional
	// +kubebuilder:default=Stop
	ErrorPolicy ErrorPolicy `json:"errorPolicy,omitempty"`

	// database names the Secret with the PostgreSQL connection string.
	// +required
	Database DatabaseSpec `json:"database"`

	// image is the worker container image. Defaults to the operator's
	// --worker-image.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// imagePullPolicy is the worker container's image pull policy. Defaults
	// to Kubernetes' default for the image (Always for :latest, else
	// IfNotPresent).
	// +optional
	// +kubebuilder:validation:Enum=Always;Never;IfNotPresent
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// resources are the worker container's compute resources. Defaults to
	// none.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// nodeSelector constrains the worker pods to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations are the worker pods' tolerations.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity is the worker pods' scheduling affinity.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// priorityClassName is the worker pods' priority class.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// env are extra environment variables of the worker container, e.g.
	// PGSSLMODE or LOG_LEVEL; an entry named like one the operator sets
	// (BATCH_SIZE, POLL_INTERVAL, ERROR_POLICY, LOG_FORMAT) replaces it.
	// DATABASE_URL, PROJECTION, PARTITION_KEY, POD_NAME, TOTAL_PARTITIONS
	// and HTTP_ADDR are refused: they come from the spec and the pod. At
	// most 64 entries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(e, !(e.name in ['DATABASE_URL', 'PROJECTION', 'PARTITION_KEY', 'POD_NAME', 'TOTAL_PARTITIONS', 'HTTP_ADDR']))",message="env may not set DATABASE_URL, PROJECTION, PARTITION_KEY, POD_NAME, TOTAL_PARTITIONS or HTTP_ADDR: the operator sets them from the spec and the pod"
	Env []corev1.EnvVar `json:"env,omitempty"`

	// imagePullSecrets name Secrets of type kubernetes.io/dockerconfigjson
	// in the Projection's namespace that the kubelet uses to pull a private
	// worker image. Defaults to none (the service account's, if any). At
	// most 16 entries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// serviceAccountName is the worker pods' service account, e.g. one a
	// cloud provider maps to a database identity or one holding
	// imagePullSecrets. Naming one also leaves mounting its API token to
	// the service account's automountServiceAccountToken. Defaults to the
	// namespace's "default" service account, with no token mounted: the
	// workers talk to PostgreSQL only.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// volumes are extra volumes of the worker pods, mounted into the worker
	// container by volumeMounts: for example a CA bundle from a ConfigMap
	// or Secret for sslmode=verify-full (with sslrootcert in the connection
	// string or PGSSLROOTCERT in env), or an emptyDir for a scratch
	// directory (the container's root filesystem is read-only). Only the
	// types the restricted Pod Security Standard allows: configMap, secret,
	// emptyDir, projected, downwardAPI, persistentVolumeClaim, csi,
	// ephemeral. Defaults to none. At most 32 entries, with unique names.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(v, has(v.configMap) || has(v.secret) || has(v.emptyDir) || has(v.projected) || has(v.downwardAPI) || has(v.persistentVolumeClaim) || has(v.csi) || has(v.ephemeral))",message="volumes may be configMap, secret, emptyDir, projected, downwardAPI, persistentVolumeClaim, csi or ephemeral: the volume types the restricted Pod Security Standard allows"
	Volumes []corev1.Volume `json:"volumes,omitempty"`

	// volumeMounts mount volumes into the worker container. Each must name
	// an entry of volumes; the operator reports one that does not as
	// Degraded with reason InvalidSpec and creates no pods (a CEL rule for
	// it would exceed the API server's cost budget). Defaults to none. At
	// most 32 entries, with unique mount paths.
	// +optional
	// +listType=map
	// +listMapKey=mountPath
	// +kubebuilder:validation:MaxItems=32
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`

	// podLabels are extra labels of the worker pods, e.g. for a service
	// mesh or a network policy. The operator's own labels
	// (app.kubernetes.io/name, app.kubernetes.io/instance,
	// app.kubernetes.io/managed-by, app.kubernetes.io/component,
	// projectionist.dev/projection) cannot be set: they select the pods.
	// Changing them rolls the pods. Defaults to none. At most 64 entries.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="!self.exists(k, k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/component', 'projectionist.dev/projection'])",message="podLabels may not set app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/managed-by, app.kubernetes.io/component or projectionist.dev/projection: the operator sets them to select the worker pods"
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// podAnnotations are extra annotations of the worker pods, e.g. for a
	// service mesh or a metrics scraper (prometheus.io/scrape,
	// prometheus.io/port: "8080"). Changing them rolls the pods. Defaults
	// to none. At most 64 entries.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// topologySpreadConstraints spread the worker pods across zones or
	// nodes. Select the pods with the label projectionist.dev/projection:
	// <metadata.name>. Defaults to none. At most 8 entries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
}

// PodDisruptionBudgetSpec is the worker pods' PodDisruptionBudget.
type PodDisruptionBudgetSpec struct {
	// enabled keeps the PodDisruptionBudget; false deletes it. Defaults to
	// true.
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// maxUnavailable is how many worker pods voluntary disruptions may
	// take down at a time: a number, or a percentage of the pods
	// ("25%"). Defaults to 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",message="maxUnavailable must be a non-negative number or a percentage such as 25%"
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// DefaultTargetLagSeconds is spec.autoscaling.targetLagSeconds when unset.
const DefaultTargetLagSeconds = 30

// AutoscalingSpec bounds the partition count the operator chooses, and
// says what lag to keep the projection under.
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="minReplicas must not exceed maxReplicas",fieldPath=".minReplicas"
type AutoscalingSpec struct {
	// minReplicas is the fewest partitions the operator runs. Defaults to
	// 1; 1 to 1024.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// maxReplicas is the most partitions the operator runs; 1 to 1024, at
	// least minReplicas.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	MaxReplicas int32 `json:"maxReplicas"`

	// targetLagSeconds is the lag, as the age in seconds of the oldest
	// event some partition has still to pass (status.lagSeconds), that the
	// operator keeps the projection under. Above it, the operator adds the
	// partitions that drain the backlog within the target at the measured
	// throughput of a partition; below half of it, it removes the ones the
	// append rate does not need (with a quarter to spare). Between the two
	// it keeps the count. Defaults to 30; 1 to 86400.
	// +optional
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	TargetLagSeconds *int32 `json:"targetLagSeconds,omitempty"`

	// scaleUpStabilizationWindow is how long every reading must have asked
	// for more partitions before the operator adds them: it adds the fewest
	// any reading of the window asked for. A Go duration; defaults to 30s;
	// 0s to 1h.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('0s') && duration(self) <= duration('1h'))",message="scaleUpStabilizationWindow must be between 0s and 1h"
	ScaleUpStabilizationWindow *metav1.Duration `json:"scaleUpStabilizationWindow,omitempty"`

	// scaleDownStabilizationWindow is how long every reading must have
	// asked for fewer partitions before the operator removes them: it keeps
	// the most any reading of the window asked for. A scale-down removes at
	// most half the partitions (n to no fewer than ceil(n/2)), and comes a
	// whole window after the previous one, after spec.autoscaling was set
	// or last changed, and after the operator started watching the
	// projection (its start, a resume): 8 idle partitions go 8, 4, 2, 1 one
	// window apart. A Go duration; defaults to 5m; 0s to 24h.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('0s') && duration(self) <= duration('24h'))",message="scaleDownStabilizationWindow must be between 0s and 24h"
	ScaleDownStabilizationWindow *metav1.Duration `json:"scaleDownStabilizationWindow,omitempty"`
}

// AutoscalingStatus is what the autoscaler (spec.autoscaling) measured and
// chose.
type AutoscalingStatus struct {
	// partitions is the partition count the autoscaler chose, which the
	// operator runs (unless spec.replicas is 0 or spec.suspend is true).
	// +required
	Partitions int32 `json:"partitions"`

	// recommendation is the count the latest reading alone asks for,
	// before the stabilization windows.
	// +optional
	Recommendation int32 `json:"recommendation,omitempty"`

	// eventsAppendedPerSecond is the rate at which events were appended to
	// the log between the last two readings.
	// +optional
	EventsAppendedPerSecond int64 `json:"eventsAppendedPerSecond,omitempty"`

	// partitionEventsPerSecond is the measured throughput of one busy
	// partition (a smoothed reading of the times every partition had a
	// backlog); 0 until measured.
	// +optional
	PartitionEventsPerSecond int64 `json:"partitionEventsPerSecond,omitempty"`

	// lastScaleTime is when the autoscaler last changed the count.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`

	// message says which count the autoscaler chose ("keeping n
	// partitions" or "scaling from m to n partitions"), why, and what held
	// it back from the recommendation (a window, at most half per
	// scale-down), if anything.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// PartitionIndexPhase is where the partition index for a count stands.
// +kubebuilder:validation:Enum=Building;Ready;Failed
type PartitionIndexPhase string

const (
	// PartitionIndexBuilding: the operator is building the index, with
	// CREATE INDEX CONCURRENTLY; appends and partitions go on meanwhile,
	// the partitions reading through the partition filter.
	PartitionIndexBuilding PartitionIndexPhase = "Building"
	// PartitionIndexReady: the index is valid; the partitions read through
	// it from their next check (within 30 seconds).
	PartitionIndexReady PartitionIndexPhase = "Ready"
	// PartitionIndexFailed: the build failed (message says why); the
	// partitions go on reading through the filter, and the operator tries
	// again later.
	PartitionIndexFailed PartitionIndexPhase = "Failed"
)

// PartitionIndexStatus is the state of the partition index for the
// projection's partition count N: an index of the events table on
// (partition_hash % N, transaction_id, global_position), shared by every
// projection of N partitions in the database.
type PartitionIndexStatus struct {
	// name is the index's name, events_partitions_N_idx.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// partitions is the partition count N the index serves.
	// +required
	Partitions int32 `json:"partitions"`

	// phase is Building, Ready or Failed.
	// +required
	Phase PartitionIndexPhase `json:"phase"`

	// since is when the index entered its phase, as this operator saw it.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// message says what the phase means for the partitions, or why the
	// build failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// PartitionStatus is one partition's progress, read from its checkpoint.
type PartitionStatus struct {
	// partition is the partition key (the pod ordinal).
	// +required
	Partition int32 `json:"partition"`

	// position is the global position of the last event the partition
	// has passed; 0 until it has passed one.
	// +optional
	Position int64 `json:"position,omitempty"`

	// lag is the number of events hashed to this partition after its
	// position that lie in the projection's scope (a ScopedProjection's
	// aggregate types and bounded contexts: events of other types are not
	// counted). Counted among the first 1000000 events after the
	// furthest-behind partition's position: beyond that it is a lower bound.
	// +optional
	Lag int64 `json:"lag,omitempty"`
}

// RebuildPhase is how far a rebuild (spec.rebuildToken) has got.
// +kubebuilder:validation:Enum=Stopping;Resetting;Replaying;Rebuilt;Failed
type RebuildPhase string

const (
	// RebuildStopping: the worker pods are being stopped; the operator
	// waits until none is left.
	RebuildStopping RebuildPhase = "Stopping"
	// RebuildResetting: the reset is requested in the database and the
	// pods are started again; the first one resets the read model and the
	// checkpoints.
	RebuildResetting RebuildPhase = "Resetting"
	// RebuildReplaying: the reset is done; the workers replay the log.
	RebuildReplaying RebuildPhase = "Replaying"
	// RebuildRebuilt: the replay passed every event in the projection's
	// scope up to the log's head at the previous status reading (at most
	// one status interval old), also while other events keep arriving.
	RebuildRebuilt RebuildPhase = "Rebuilt"
	// RebuildFailed: the reset was refused (the projection has no Reset
	// hook); nothing was changed. A new token tries again.
	RebuildFailed RebuildPhase = "Failed"
)

// DeadLetterActionType is what a dead-letter action does.
// +kubebuilder:validation:Enum=Retry;Discard
type DeadLetterActionType string

const (
	// DeadLetterRetry hands the dead letters back to their partitions'
	// workers, which apply them again.
	DeadLetterRetry DeadLetterActionType = "Retry"
	// DeadLetterDiscard deletes the dead letters without applying them.
	DeadLetterDiscard DeadLetterActionType = "Discard"
)

// MaxDeadLetterActionEvents bounds spec.deadLetterAction.eventIDs.
const MaxDeadLetterActionEvents = 100

// DeadLetterAction is a retry or discard of dead letters, run once per
// token.
type DeadLetterAction struct {
	// token names this action: the operator runs it when it differs from
	// status.deadLetterAction.token. At most 63 printable ASCII
	// characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[ -~]+$`
	Token string `json:"token"`

	// action is Retry or Discard.
	// +required
	Action DeadLetterActionType `json:"action"`

	// eventIDs are the dead-lettered events to act on, by event id (as
	// status.deadLetterSamples and 'projectionist dead-letters list' show
	// them); empty means every dead letter of the projection. At most 100.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:Format=uuid
	EventIDs []string `json:"eventIDs,omitempty"`
}

// DeadLetterActionStatus is the outcome of the latest dead-letter action.
type DeadLetterActionStatus struct {
	// token is the spec.deadLetterAction.token that was run.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Token string `json:"token"`

	// action is what was done: Retry or Discard.
	// +required
	Action DeadLetterActionType `json:"action"`

	// deadLetters is the number of dead letters the action applied to:
	// retries requested, or dead letters deleted.
	// +optional
	DeadLetters int64 `json:"deadLetters,omitempty"`

	// completedAt is when the operator ran it.
	// +optional
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`

	// message says what was done, and which event ids were not dead
	// letters of the projection.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Message string `json:"message,omitempty"`
}

// DeadLetterSample is one dead letter, as status shows it.
type DeadLetterSample struct {
	// eventID is the event's id, which names the dead letter.
	// +required
	EventID string `json:"eventID"`
	// position is the event's global position in the log.
	// +optional
	Position int64 `json:"position,omitempty"`
	// partition is the partition that set the event aside.
	// +optional
	Partition int32 `json:"partition,omitempty"`
	// eventType is the event's type.
	// +optional
	EventType string `json:"eventType,omitempty"`
	// aggregate is the event's aggregate, as type/id.
	// +optional
	Aggregate string `json:"aggregate,omitempty"`
	// failedAt is when the handler last failed on the event.
	// +optional
	FailedAt *metav1.Time `json:"failedAt,omitempty"`
	// retryPending is true while a retry is requested and not yet run.
	// +optional
	RetryPending bool `json:"retryPending,omitempty"`
	// error is the first line of the handler's last error, cut at 256
	// characters (the whole one: 'projectionist dead-letters show').
	// +optional
	Error string `json:"error,omitempty"`
}

// MaxDeadLetterSamples is how many dead letters status.deadLetterSamples
// shows, the oldest first.
const MaxDeadLetterSamples = 10

// RebuildStatus is the state of the latest rebuild.
type RebuildStatus struct {
	// token is the spec.rebuildToken this rebuild is for.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Token string `json:"token"`

	// phase is Stopping, Resetting, Replaying, Rebuilt or Failed.
	// +required
	Phase RebuildPhase `json:"phase"`

	// startedAt is when the operator saw the token.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`

	// resetAt is when a worker reset the read model and the checkpoints
	// (the database's clock).
	// +optional
	ResetAt *metav1.Time `json:"resetAt,omitempty"`

	// completedAt is when the rebuild ended: Rebuilt or Failed.
	// +optional
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`

	// eventsReplayed is the number of events the workers have handled
	// since the reset, as of observedAt.
	// +optional
	EventsReplayed int64 `json:"eventsReplayed,omitempty"`

	// eventsPerSecond is the replay's rate between the last two readings.
	// +optional
	EventsPerSecond int64 `json:"eventsPerSecond,omitempty"`

	// observedAt is when eventsReplayed was read.
	// +optional
	ObservedAt *metav1.Time `json:"observedAt,omitempty"`

	// message says what the rebuild waits for, or why it failed.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Message string `json:"message,omitempty"`
}

// ProjectionStatus is the observed state of a Projection.
type ProjectionStatus struct {
	// replicas is the number of worker pods that exist.
	// +optional
	Replicas int32 `json:"replicas"`

	// readyReplicas is the number of worker pods that are ready: connected
	// to the database, inside the topology and past their first batch.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`

	// selector is the label selector of the worker pods, for the scale
	// subresource (kubectl scale, HorizontalPodAutoscaler).
	// +optional
	Selector string `json:"selector,omitempty"`

	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// topologyGeneration is the projection's topology generation in the
	// database: it grows by one with every change of the partition count.
	// +optional
	TopologyGeneration int64 `json:"topologyGeneration,omitempty"`

	// partitions is the partition count in the database.
	// +optional
	Partitions int32 `json:"partitions"`

	// headPosition is the global position of the newest event in the
	// database.
	// +optional
	HeadPosition int64 `json:"headPosition,omitempty"`

	// deadLetters is the number of events parked in the projection's
	// dead-letter table (errorPolicy DeadLetter), waiting for
	// `projectionist dead-letters retry` or `discard`. 0 or more; a
	// Warning Event DeadLettersGrew reports an increase.
	// +optional
	DeadLetters int64 `json:"deadLetters,omitempty"`

	// lag is the number of events the projection has still to pass, over
	// all partitions: events in its scope only (a ScopedProjection's
	// aggregate types and bounded contexts). See partitionStatuses[].lag
	// for its bound.
	// +optional
	Lag int64 `json:"lag"`

	// lagSeconds is the age, in whole seconds, of the oldest event the
	// projection has still to pass; 0 when caught up.
	// +optional
	LagSeconds int64 `json:"lagSeconds,omitempty"`

	// partitionStatuses is each partition's position and lag, by
	// partition key.
	// +optional
	// +listType=map
	// +listMapKey=partition
	PartitionStatuses []PartitionStatus `json:"partitionStatuses,omitempty"`

	// autoscaling is what the autoscaler measured and chose, while
	// spec.autoscaling is set.
	// +optional
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`

	// partitionIndex is the partition index for the projection's
	// partition count, through which each partition reads only its own
	// rows; set while the count is at least the operator's
	// --partition-index-min-partitions.
	// +optional
	PartitionIndex *PartitionIndexStatus `json:"partitionIndex,omitempty"`

	// rebuild is the state of the latest rebuild asked for with
	// spec.rebuildToken; unset if none was.
	// +optional
	Rebuild *RebuildStatus `json:"rebuild,omitempty"`

	// deadLetterSamples are the projection's oldest dead letters, at most
	// 10 (status.deadLetters counts them all).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	DeadLetterSamples []DeadLetterSample `json:"deadLetterSamples,omitempty"`

	// deadLetterAction is the outcome of the latest spec.deadLetterAction.
	// +optional
	DeadLetterAction *DeadLetterActionStatus `json:"deadLetterAction,omitempty"`

	// conditions are Ready, Progressing, Degraded, Stalled, CaughtUp and,
	// once a rebuild has been asked for, Rebuilding.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types.
const (
	// ConditionReady is True when every desired worker pod is ready and the
	// database's topology matches spec.replicas.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the operator is rolling out a
	// change: pods being created or removed, or a rescale under way.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the operator cannot do what the spec
	// asks: the Secret or its key is missing, the connection string is
	// invalid, the database is unreachable or its schema cannot be brought
	// up to date, the topology switch failed, or a worker keeps exiting
	// with an error.
	ConditionDegraded = "Degraded"
	// ConditionStalled is True when a partition has events to handle but
	// has not moved its checkpoint for StalledAfter (one that never ran:
	// for StalledAfter since the Projection's creation): its worker is down
	// or stuck, or a long-running write transaction holds every reader
	// back (see the workers' projectionist_horizon_stall_seconds). False
	// says why not: CheckpointsMoving, NotStarted (a partition with events
	// to handle has not run yet, for less than StalledAfter),
	// NothingToHandle (no partition has lag), Paused or Suspended.
	ConditionStalled = "Stalled"
	// ConditionCaughtUp turns True (reason LagReachedZero) the first time
	// every partition of the Projection's topology has passed every event
	// in its scope up to the log's head at the previous status reading
	// ("has passed what was there", reached under steady appends, when
	// lag itself seldom reads 0), with events in the log, and stays True
	// (its lastTransitionTime says when): the signal to cut readers over
	// to a new projection, e.g. kubectl wait --for=condition=CaughtUp.
	// While the log is empty it is False, reason LogEmpty: a read model
	// that has projected nothing is no signal to cut over. A rebuild
	// (spec.rebuildToken) turns it False, reason Rebuilding, until the
	// replay is Rebuilt.
	ConditionCaughtUp = "CaughtUp"
	// ConditionRebuilding is True while a rebuild asked for with
	// spec.rebuildToken is under way (reason Stopping, Resetting or
	// Replaying, or Suspended or Paused while it waits for workers), and
	// False once it is over: reason Rebuilt, or ResetNotSupported when the
	// projection has no Reset hook. A Projection never asked to rebuild
	// does not have it. A rebuild turns CaughtUp False (reason Rebuilding)
	// until the replay is Rebuilt (see RebuildRebuilt).
	ConditionRebuilding = "Rebuilding"
)

// StalledAfter is how long a partition with lag may leave its checkpoint
// unmoved before the Projection is Stalled. A working partition writes its
// checkpoint after every batch that handles events, and about once a
// second while it has nothing to handle.
const StalledAfter = 2 * time.Minute

// Condition reasons.
const (
	ReasonAllReplicasReady    = "AllReplicasReady"
	ReasonReplicasNotReady    = "ReplicasNotReady"
	ReasonPaused              = "Paused"
	ReasonScaling             = "Scaling"
	ReasonBlocked             = "Blocked"
	ReasonRolledOut           = "RolledOut"
	ReasonReconciled          = "Reconciled"
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonSecretKeyNotFound   = "SecretKeyNotFound"
	ReasonInvalidDSN          = "InvalidConnectionString"
	ReasonDatabaseUnreachable = "DatabaseUnreachable"
	ReasonMigrationFailed     = "SchemaMigrationFailed"
	ReasonTopologyFailed      = "TopologySwitchFailed"
	ReasonWorkerFailing       = "WorkerFailing"
	ReasonNoProgress          = "NoProgress"
	ReasonProgressing         = "CheckpointsMoving"
	ReasonNotStarted          = "NotStarted"
	ReasonNothingToHandle     = "NothingToHandle"
	ReasonSuspended           = "Suspended"
	ReasonLagReachedZero      = "LagReachedZero"
	ReasonCatchingUp          = "CatchingUp"
	ReasonLogEmpty            = "LogEmpty"
	ReasonRebuilding          = "Rebuilding"
	ReasonRebuildStopping     = "Stopping"
	ReasonRebuildResetting    = "Resetting"
	ReasonRebuildReplaying    = "Replaying"
	ReasonRebuilt             = "Rebuilt"
	ReasonResetNotSupported   = "ResetNotSupported"
	ReasonAutoscaled          = "Autoscaled"
	// ReasonPartitionIndexReady and ReasonPartitionIndexFailed are the
	// Events of a partition index build (status.partitionIndex).
	ReasonPartitionIndexReady  = "PartitionIndexReady"
	ReasonPartitionIndexFailed = "PartitionIndexFailed"

	// ReasonCANotFound: the connection string's sslrootcert, sslcert or
	// sslkey names a file in one of the Projection's ConfigMap or Secret
	// volumes, and that ConfigMap, Secret or key does not exist.
	ReasonCANotFound = "CABundleNotFound"
	// ReasonInvalidSpec: the spec passed the API server's validation but
	// cannot make a pod, e.g. a volumeMounts entry naming no volume.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonProjectionNameInUse: another Projection owns this one's
	// projectionName in its database; this one changes nothing there and
	// runs no pods until that one is deleted.
	ReasonProjectionNameInUse = "ProjectionNameInUse"
)

// ReasonDatabaseNotResponding is the Degraded reason of a database that
// accepts connections but does not answer in time (stopped, overloaded, a
// network blackhole); ReasonDatabaseUnreachable is one that refuses them.
const ReasonDatabaseNotResponding = "DatabaseNotResponding"

// ReasonDatabaseSlow is the reason of a read that did not finish in time
// while the database answers a ping: a query waiting on a lock, or slow on
// a large log. The database is reachable, so the operator keeps the last
// good status fields and sets Degraded=False with this reason; Degraded
// turns True with it only once reads have been slow for a while (the
// operator's slow-read grace, 1 minute by default), and a worker failure
// (WorkerFailing) is reported before it.
const ReasonDatabaseSlow = "DatabaseSlow"

// Projection runs an event-sourcing projection as a StatefulSet of
// partitioned worker pods against PostgreSQL.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=proj,categories=all
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 52 characters starting with a letter (lowercase letters, digits and '-'), since it names the worker StatefulSet, its pods and its Service",fieldPath=".metadata"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,description="Why the Projection is or is not ready: AllReplicasReady, ReplicasNotReady, Paused, or the Degraded reason (SecretNotFound, DatabaseUnreachable, WorkerFailing, ...)"
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.readyReplicas`,description="Ready worker pods",priority=1
// +kubebuilder:printcolumn:name="Partitions",type=integer,JSONPath=`.status.partitions`
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.lag`
// +kubebuilder:printcolumn:name="Projection",type=string,JSONPath=`.spec.projectionName`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Projection struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state.
	// +required
	Spec ProjectionSpec `json:"spec"`

	// status is the observed state, written by the operator.
	// +optional
	Status ProjectionStatus `json:"status,omitempty"`
}

// EffectiveProjectionName is spec.projectionName, or metadata.name when
// unset.
func (p *Projection) EffectiveProjectionName() string {
	if p.Spec.ProjectionName != "" {
		return p.Spec.ProjectionName
	}
	return p.Name
}

// DefaultReplicas is spec.replicas when unset, as the CRD defaults it:
// one partition (TestCRDDefaultsMatchLibrary holds both to the library's
// projection.DefaultTotalPartitions).
const DefaultReplicas = 1

// SpecReplicas is spec.replicas, or DefaultReplicas for a Projection that
// skipped defaulting: the partition count the user asks for.
func (p *Projection) SpecReplicas() int32 { return ptr.Deref(p.Spec.Replicas, DefaultReplicas) }

// Paused reports whether spec.replicas is 0, which pauses the projection:
// no worker pods, and the partition count in the database kept as it was.
// Under spec.autoscaling too, 0 pauses rather than lets the autoscaler
// choose.
func (p *Projection) Paused() bool { return p.SpecReplicas() == 0 }

// Suspended reports whether spec.suspend is true: no worker pods, and the
// partition count (spec.replicas, or the autoscaler's) kept for the resume.
func (p *Projection) Suspended() bool { return ptr.Deref(p.Spec.Suspend, false) }

// DesiredPartitions is the partition count p runs at, as the operator last
// chose it: spec.replicas, or under spec.autoscaling the autoscaler's
// count (status.autoscaling.partitions) once it has one, with autoscaled
// true. A paused Projection asks for 0; a suspended one keeps its count,
// which the resume brings back.
func (p *Projection) DesiredPartitions() (n int32, autoscaled bool) {
	n = p.SpecReplicas()
	if a := p.Status.Autoscaling; a != nil && p.Spec.Autoscaling != nil && !p.Paused() {
		return a.Partitions, true
	}
	return n, false
}

// ProjectionList is a list of Projections.
//
// +kubebuilder:object:root=true
type ProjectionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Projection `json:"items"`
}
