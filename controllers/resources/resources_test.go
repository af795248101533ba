package resources

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

const (
	defaultImage = "docker.io/projectionist/projectionist:v0.1.0"
	uid          = "6f1c1f5e-8a43-4c1e-9a53-0d7b6f1e2a10"
)

// minimal is a Projection as a user writes it, before the API server's
// defaulting: the builders must default the same way.
func minimal() *v1alpha1.Projection {
	return &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Name: "user-count", Namespace: "shop", UID: uid},
		Spec: v1alpha1.ProjectionSpec{
			Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{Name: "pg"}},
		},
	}
}

// full sets every spec field.
func full() *v1alpha1.Projection {
	return &v1alpha1.Projection{
		ObjectMeta: metav1.ObjectMeta{Name: "user-count", Namespace: "shop", UID: uid, Generation: 7},
		Spec: v1alpha1.ProjectionSpec{
			ProjectionName: "user_count",
			Replicas:       ptr.To[int32](4),
			BatchSize:      ptr.To[int32](500),
			PollInterval:   &metav1.Duration{Duration: 2 * time.Second},
			ErrorPolicy:    v1alpha1.ErrorPolicyDeadLetter,
			Database: v1alpha1.DatabaseSpec{SecretRef: v1alpha1.SecretKeySelector{
				Name: "pg-credentials", Key: "custom",
			}},
			Image:           "registry.example.com/shop/projections:1.2.3",
			ImagePullPolicy: corev1.PullAlways,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("100m"),
					corev1.ResourceMemory: resource.MustParse("64Mi"),
				},
				Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
			},
			NodeSelector: map[string]string{"kubernetes.io/os": "linux", "pool": "projections"},
			Tolerations: []corev1.Toleration{
				{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "projections", Effect: corev1.TaintEffectNoSchedule},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
			},
			Affinity: &corev1.Affinity{
				NodeAffinity: &corev1.NodeAffinity{
					RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
						NodeSelectorTerms: []corev1.NodeSelectorTerm{{
							MatchExpressions: []corev1.NodeSelectorRequirement{{
								Key: "kubernetes.io/arch", Operator: corev1.NodeSelectorOpIn, Values: []string{"amd64", "arm64"},
							}},
						}},
					},
				},
				PodAntiAffinity: &corev1.PodAntiAffinity{
					PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
						Weight: 100,
						PodAffinityTerm: corev1.PodAffinityTerm{
							LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"projectionist.dev/projection": "user-count"}},
							TopologyKey:   "kubernetes.io/hostname",
						},
					}},
				},
			},
			PriorityClassName: "projections-high",
			Env: []corev1.EnvVar{
				{Name: "LOG_LEVEL", Value: "debug"},
				{Name: "PGSSLROOTCERT", ValueFrom: &corev1.EnvVarSource{
					SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "pg-ca"},
						Key:                  "ca.crt",
					},
				}},
				{Name: "PGAPPNAME", Value: "$(POD_NAME)"},
			},
			ImagePullSecrets:   []corev1.LocalObjectReference{{Name: "registry-credentials"}},
			ServiceAccountName: "projections",
			Volumes: []corev1.Volume{{
				Name: "db-ca",
				VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "db-ca-bundle"},
				}},
			}},
			VolumeMounts:   []corev1.VolumeMount{{Name: "db-ca", MountPath: "/etc/db-ca", ReadOnly: true}},
			PodLabels:      map[string]string{"team": "shop", "sidecar.istio.io/inject": "false"},
			PodAnnotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
				MaxSkew:           1,
				TopologyKey:       "topology.kubernetes.io/zone",
				WhenUnsatisfiable: corev1.ScheduleAnyway,
				LabelSelector:     &metav1.LabelSelector{MatchLabels: map[string]string{"projectionist.dev/projection": "user-count"}},
			}},
		},
	}
}

// with returns p after f changed it.
func with(p *v1alpha1.Projection, f func(*v1alpha1.Projection)) *v1alpha1.Projection {
	f(p)
	return p
}

func parse[T any](t *testing.T, manifest string) *T {
	t.Helper()
	out := new(T)
	if err := yaml.UnmarshalStrict([]byte(manifest), out); err != nil {
		t.Fatalf("parsing the expected object: %v", err)
	}
	return out
}

// ownedMetadata is the metadata block every child object of the user-count
// Projection in namespace shop carries: the common labels and the controller
// owner reference. name is the child object's name.
func ownedMetadata(name string) string {
	return `metadata:
  name: ` + name + `
  namespace: shop
  labels:
    app.kubernetes.io/name: projectionist-worker
    app.kubernetes.io/instance: user-count
    app.kubernetes.io/managed-by: projectionist
    app.kubernetes.io/component: worker
    projectionist.dev/projection: user-count
  ownerReferences:
  - apiVersion: projectionist.dev/v1alpha1
    kind: Projection
    name: user-count
    uid: 6f1c1f5e-8a43-4c1e-9a53-0d7b6f1e2a10
    controller: true
    blockOwnerDeletion: true`
}

// statefulSetHead is the start of every expected worker StatefulSet: type,
// metadata, the fixed spec fields and the pod template's common labels.
func statefulSetHead(replicas int) string {
	return `apiVersion: apps/v1
kind: StatefulSet
` + ownedMetadata("user-count") + `
spec:
  replicas: ` + strconv.Itoa(replicas) + `
  podManagementPolicy: Parallel
  serviceName: user-count-workers
  selector:
    matchLabels:
      app.kubernetes.io/name: projectionist-worker
      app.kubernetes.io/instance: user-count
      projectionist.dev/projection: user-count
  template:
    metadata:
      labels:
        app.kubernetes.io/name: projectionist-worker
        app.kubernetes.io/instance: user-count
        app.kubernetes.io/managed-by: projectionist
        app.kubernetes.io/component: worker
        projectionist.dev/projection: user-count`
}

// The pieces of the worker container and pod spec that every expected
// StatefulSet shares, whatever the Projection asks for.
const (
	// minimalWorkerEnv is the environment a Projection that sets nothing gets.
	minimalWorkerEnv = `        - name: DATABASE_URL
          valueFrom:
            secretKeyRef: {name: pg, key: dsn}
        - {name: PROJECTION, value: user-count}
        - {name: BATCH_SIZE, value: "100"}
        - {name: POLL_INTERVAL, value: 100ms}
        - {name: ERROR_POLICY, value: stop}`
	workerDownwardEnv = `        - name: PARTITION_KEY
          valueFrom:
            fieldRef: {fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}
        - name: POD_NAME
          valueFrom:
            fieldRef: {fieldPath: metadata.name}
        - {name: HTTP_ADDR, value: ":8080"}`
	workerProbes = `        ports:
        - {name: http, containerPort: 8080, protocol: TCP}
        livenessProbe:
          httpGet: {path: /healthz, port: http}
        readinessProbe:
          httpGet: {path: /readyz, port: http}
          periodSeconds: 2`
	workerContainerSecurity = `        securityContext:
          runAsNonRoot: true
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities:
            drop: [ALL]
          seccompProfile: {type: RuntimeDefault}`
	workerPodSecurity = `      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      terminationGracePeriodSeconds: 30`
)

var wantMinimalStatefulSet = `
` + statefulSetHead(3) + `
    spec:
      containers:
      - name: worker
        image: docker.io/projectionist/projectionist:v0.1.0
        args: [worker]
        terminationMessagePolicy: FallbackToLogsOnError
        env:
` + minimalWorkerEnv + `
` + workerDownwardEnv + `
        - {name: LOG_FORMAT, value: json}
` + workerProbes + `
` + workerContainerSecurity + `
` + workerPodSecurity + `
      automountServiceAccountToken: false
      enableServiceLinks: false
`

var wantFullStatefulSet = `
` + statefulSetHead(2) + `
        team: shop
        sidecar.istio.io/inject: "false"
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "8080"
    spec:
      containers:
      - name: worker
        image: registry.example.com/shop/projections:1.2.3
        imagePullPolicy: Always
        args: [worker]
        terminationMessagePolicy: FallbackToLogsOnError
        env:
        - name: DATABASE_URL
          valueFrom:
            secretKeyRef: {name: pg-credentials, key: custom}
        - {name: PROJECTION, value: user_count}
        - {name: BATCH_SIZE, value: "500"}
        - {name: POLL_INTERVAL, value: 2s}
        - {name: ERROR_POLICY, value: dead-letter}
` + workerDownwardEnv + `
        - {name: LOG_FORMAT, value: json}
        - {name: LOG_LEVEL, value: debug}
        - name: PGSSLROOTCERT
          valueFrom:
            secretKeyRef: {name: pg-ca, key: ca.crt}
        - {name: PGAPPNAME, value: $(POD_NAME)}
` + workerProbes + `
        resources:
          requests: {cpu: 100m, memory: 64Mi}
          limits: {memory: 128Mi}
` + workerContainerSecurity + `
        volumeMounts:
        - {name: db-ca, mountPath: /etc/db-ca, readOnly: true}
` + workerPodSecurity + `
      enableServiceLinks: false
      serviceAccountName: projections
      imagePullSecrets:
      - name: registry-credentials
      volumes:
      - name: db-ca
        configMap: {name: db-ca-bundle}
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: ScheduleAnyway
        labelSelector:
          matchLabels:
            projectionist.dev/projection: user-count
      nodeSelector:
        kubernetes.io/os: linux
        pool: projections
      tolerations:
      - {key: dedicated, operator: Equal, value: projections, effect: NoSchedule}
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector:
                matchLabels:
                  projectionist.dev/projection: user-count
              topologyKey: kubernetes.io/hostname
      priorityClassName: projections-high
`

func TestStatefulSet(t *testing.T) {
	tests := []struct {
		name     string
		p        *v1alpha1.Projection
		replicas int32
		opts     Options
		want     string
	}{
		{
			name:     "minimal projection gets the defaults and the operator's image",
			p:        minimal(),
			replicas: 3,
			opts:     Options{WorkerImage: defaultImage},
			want:     wantMinimalStatefulSet,
		},
		{
			name: "every field set; spec.image wins over the operator's image",
			p:    full(),
			// Not spec.replicas (4): the reconciler passes the count the
			// database has switched to.
			replicas: 2,
			opts:     Options{WorkerImage: defaultImage},
			want:     wantFullStatefulSet,
		},
		{
			name:     "spec.image without an operator image",
			p:        full(),
			replicas: 2,
			want:     wantFullStatefulSet,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StatefulSet(tt.p, tt.replicas, tt.opts)
			if err != nil {
				t.Fatalf("StatefulSet: %v", err)
			}
			want := parse[appsv1ac.StatefulSetApplyConfiguration](t, tt.want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("StatefulSet mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStatefulSetEnvOverride: spec.env replaces an operator variable of the
// same name, and a later spec.env entry replaces an earlier one, with no
// duplicate name left (server-side apply rejects duplicates in env).
func TestStatefulSetEnvOverride(t *testing.T) {
	p := with(minimal(), func(p *v1alpha1.Projection) {
		p.Spec.Env = []corev1.EnvVar{
			{Name: "LOG_FORMAT", Value: "text"},
			{Name: "LOG_LEVEL", Value: "info"},
			{Name: "PGSSLMODE", Value: "require"},
			{Name: "LOG_LEVEL", Value: "debug"},
		}
	})
	sts, err := StatefulSet(p, 1, Options{WorkerImage: defaultImage})
	if err != nil {
		t.Fatalf("StatefulSet: %v", err)
	}
	want := parse[[]corev1ac.EnvVarApplyConfiguration](t, `
`+minimalWorkerEnv+`
`+workerDownwardEnv+`
        - {name: LOG_FORMAT, value: text}
        - {name: PGSSLMODE, value: require}
        - {name: LOG_LEVEL, value: debug}
`)
	got := sts.Spec.Template.Spec.Containers[0].Env
	if diff := cmp.Diff(*want, got); diff != "" {
		t.Errorf("env mismatch (-want +got):\n%s", diff)
	}
}

func TestStatefulSetErrors(t *testing.T) {
	opts := Options{WorkerImage: defaultImage}
	tests := []struct {
		name    string
		p       *v1alpha1.Projection
		opts    Options
		wantErr error
		wantMsg string // a part of the message
	}{
		{
			name:    "no image anywhere",
			p:       minimal(),
			wantErr: ErrNoImage,
			wantMsg: "no worker image",
		},
		{
			name:    "name too long for the revision-hash label",
			p:       with(minimal(), func(p *v1alpha1.Projection) { p.Name = strings.Repeat("a", 53) }),
			opts:    opts,
			wantErr: ErrInvalidName,
			wantMsg: "at most 52 characters",
		},
		{
			name:    "name with a dot cannot be a pod hostname",
			p:       with(minimal(), func(p *v1alpha1.Projection) { p.Name = "user.count" }),
			opts:    opts,
			wantErr: ErrInvalidName,
			wantMsg: `"user.count"`,
		},
		{
			name:    "name starting with a digit cannot name a Service",
			p:       with(minimal(), func(p *v1alpha1.Projection) { p.Name = "1st-projection" }),
			opts:    opts,
			wantErr: ErrInvalidName,
			wantMsg: `"1st-projection"`,
		},
		{
			name:    "unknown error policy",
			p:       with(minimal(), func(p *v1alpha1.Projection) { p.Spec.ErrorPolicy = "Retry" }),
			opts:    opts,
			wantErr: ErrInvalidSpec,
			wantMsg: `spec.errorPolicy "Retry"`,
		},
		{
			name: "spec.env sets the partition count",
			p: with(minimal(), func(p *v1alpha1.Projection) {
				p.Spec.Env = []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "debug"}, {Name: "TOTAL_PARTITIONS", Value: "4"}}
			}),
			opts:    opts,
			wantErr: ErrInvalidSpec,
			wantMsg: "spec.env[1] sets TOTAL_PARTITIONS",
		},
		{
			name: "spec.env sets the partition key",
			p: with(minimal(), func(p *v1alpha1.Projection) {
				p.Spec.Env = []corev1.EnvVar{{Name: "PARTITION_KEY", Value: "0"}}
			}),
			opts:    opts,
			wantErr: ErrInvalidSpec,
			wantMsg: "spec.env[0] sets PARTITION_KEY",
		},
		{
			name: "spec.podLabels sets a selector label",
			p: with(minimal(), func(p *v1alpha1.Projection) {
				p.Spec.PodLabels = map[string]string{"team": "shop", LabelProjection: "other"}
			}),
			opts:    opts,
			wantErr: ErrInvalidSpec,
			wantMsg: "spec.podLabels sets projectionist.dev/projection",
		},
		{
			name: "spec.volumeMounts names no volume",
			p: with(minimal(), func(p *v1alpha1.Projection) {
				p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				p.Spec.VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/tmp"}, {Name: "db-ca", MountPath: "/etc/db-ca"}}
			}),
			opts:    opts,
			wantErr: ErrInvalidSpec,
			wantMsg: `spec.volumeMounts[1] mounts volume "db-ca", which spec.volumes does not have`,
		},
		{
			name: "spec.env sets the database",
			p: with(minimal(), func(p *v1alpha1.Projection) {
				p.Spec.Env = []corev1.EnvVar{{Name: "DATABASE_URL", Value: "postgres://elsewhere/db"}}
			}),
			opts:    opts,
			wantErr: ErrInvalidSpec,
			wantMsg: "spec.env[0] sets DATABASE_URL",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StatefulSet(tt.p, 1, tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("StatefulSet error = %v, want one matching %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("StatefulSet error = %q, want it to contain %q", err, tt.wantMsg)
			}
			if got != nil {
				t.Errorf("StatefulSet returned an object with its error: %v", got)
			}
		})
	}
}

func TestValidateNameLongest(t *testing.T) {
	name := strings.Repeat("a", MaxNameLength)
	if err := ValidateName(name); err != nil {
		t.Fatalf("ValidateName(%d characters) = %v, want nil", len(name), err)
	}
	// The names that must fit in a DNS label do.
	p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, n := range []string{ServiceName(p), StatefulSetName(p) + "-1023", StatefulSetName(p) + "-4294967295"} {
		if len(n) > 63 {
			t.Errorf("%q has %d characters, more than a DNS label's 63", n, len(n))
		}
	}
}

// TestScalingKeepsPodTemplate is DESIGN rule 5: the replica count is not in
// the pod template, so scaling never rolls the pods. Everything but
// spec.replicas is the same.
func TestScalingKeepsPodTemplate(t *testing.T) {
	for name, p := range map[string]*v1alpha1.Projection{"minimal": minimal(), "full": full()} {
		t.Run(name, func(t *testing.T) {
			opts := Options{WorkerImage: defaultImage}
			one, err := StatefulSet(p, 1, opts)
			if err != nil {
				t.Fatalf("StatefulSet(1): %v", err)
			}
			eight, err := StatefulSet(p, 8, opts)
			if err != nil {
				t.Fatalf("StatefulSet(8): %v", err)
			}
			if diff := cmp.Diff(one.Spec.Template, eight.Spec.Template); diff != "" {
				t.Errorf("pod template differs between 1 and 8 replicas (-1 +8):\n%s", diff)
			}
			if *one.Spec.Replicas != 1 || *eight.Spec.Replicas != 8 {
				t.Errorf("replicas = %d and %d, want 1 and 8", *one.Spec.Replicas, *eight.Spec.Replicas)
			}
			eight.Spec.Replicas = ptr.To[int32](1)
			if diff := cmp.Diff(one, eight); diff != "" {
				t.Errorf("StatefulSets differ beyond spec.replicas (-1 +8):\n%s", diff)
			}
			for _, e := range one.Spec.Template.Spec.Containers[0].Env {
				if *e.Name == "TOTAL_PARTITIONS" {
					t.Errorf("the pod template sets TOTAL_PARTITIONS")
				}
			}
		})
	}
}

// TestRestrictedSecurityContext checks the Pod Security Standards'
// "restricted" profile on the built pod template, rule by rule.
func TestRestrictedSecurityContext(t *testing.T) {
	for name, p := range map[string]*v1alpha1.Projection{"minimal": minimal(), "full": full()} {
		t.Run(name, func(t *testing.T) {
			sts, err := StatefulSet(p, 1, Options{WorkerImage: defaultImage})
			if err != nil {
				t.Fatalf("StatefulSet: %v", err)
			}
			pod := sts.Spec.Template.Spec
			if pod.HostNetwork != nil || pod.HostPID != nil || pod.HostIPC != nil || pod.SecurityContext.Sysctls != nil {
				t.Errorf("pod uses host namespaces or sysctls")
			}
			// The volume types the restricted Pod Security Standard allows
			// (the CRD refuses the others).
			for _, v := range pod.Volumes {
				if v.ConfigMap == nil && v.Secret == nil && v.EmptyDir == nil && v.Projected == nil && v.DownwardAPI == nil &&
					v.PersistentVolumeClaim == nil && v.CSI == nil && v.Ephemeral == nil {
					t.Errorf("volume %s is of a type the restricted standard forbids", *v.Name)
				}
			}
			if !ptr.Deref(pod.SecurityContext.RunAsNonRoot, false) || ptr.Deref(pod.SecurityContext.RunAsUser, 0) == 0 {
				t.Errorf("pod may run as root: %+v", pod.SecurityContext)
			}
			if s := pod.SecurityContext.SeccompProfile; s == nil || ptr.Deref(s.Type, "") != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod seccompProfile = %+v, want RuntimeDefault", s)
			}
			if len(pod.Containers) != 1 || len(pod.InitContainers) > 0 || len(pod.EphemeralContainers) > 0 {
				t.Fatalf("want exactly one container")
			}
			c := pod.Containers[0].SecurityContext
			if c == nil {
				t.Fatal("container has no securityContext")
			}
			if ptr.Deref(c.Privileged, false) || ptr.Deref(c.AllowPrivilegeEscalation, true) {
				t.Errorf("container may be privileged or escalate privileges")
			}
			if !ptr.Deref(c.RunAsNonRoot, false) {
				t.Errorf("container runAsNonRoot is not true")
			}
			if c.Capabilities == nil || !cmp.Equal(c.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(c.Capabilities.Add) > 0 {
				t.Errorf("container capabilities = %+v, want drop [ALL] and no add", c.Capabilities)
			}
			if s := c.SeccompProfile; s == nil || ptr.Deref(s.Type, "") != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("container seccompProfile = %+v, want RuntimeDefault", s)
			}
			if !ptr.Deref(c.ReadOnlyRootFilesystem, false) {
				t.Errorf("container root filesystem is writable")
			}
			// No token unless spec.serviceAccountName names an account,
			// whose own setting then decides.
			if p.Spec.ServiceAccountName == "" && ptr.Deref(pod.AutomountServiceAccountToken, true) {
				t.Errorf("pod mounts a service account token")
			}
			if p.Spec.ServiceAccountName != "" && pod.AutomountServiceAccountToken != nil {
				t.Errorf("automountServiceAccountToken = %v, want it left to service account %s", *pod.AutomountServiceAccountToken, p.Spec.ServiceAccountName)
			}
		})
	}
}

func TestService(t *testing.T) {
	want := parse[corev1ac.ServiceApplyConfiguration](t, `
apiVersion: v1
kind: Service
`+ownedMetadata("user-count-workers")+`
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    app.kubernetes.io/name: projectionist-worker
    app.kubernetes.io/instance: user-count
    projectionist.dev/projection: user-count
  ports:
  - {name: http, protocol: TCP, port: 8080, targetPort: http}
`)
	// The spec does not change the Service.
	for name, p := range map[string]*v1alpha1.Projection{"minimal": minimal(), "full": full()} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(want, Service(p)); diff != "" {
				t.Errorf("Service mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	manifest := func(maxUnavailable string) string {
		return `
apiVersion: policy/v1
kind: PodDisruptionBudget
` + ownedMetadata("user-count") + `
spec:
  maxUnavailable: ` + maxUnavailable + `
  selector:
    matchLabels:
      app.kubernetes.io/name: projectionist-worker
      app.kubernetes.io/instance: user-count
      projectionist.dev/projection: user-count
  unhealthyPodEvictionPolicy: AlwaysAllow
`
	}
	for _, tc := range []struct {
		name    string
		p       *v1alpha1.Projection
		want    string
		enabled bool
	}{
		{"default", minimal(), "1", true},
		{"a percentage", with(minimal(), func(p *v1alpha1.Projection) {
			p.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromString("25%"))}
		}), `"25%"`, true},
		{"a number", with(minimal(), func(p *v1alpha1.Projection) {
			p.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{Enabled: ptr.To(true), MaxUnavailable: ptr.To(intstr.FromInt32(3))}
		}), "3", true},
		{"disabled", with(minimal(), func(p *v1alpha1.Projection) {
			p.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{Enabled: ptr.To(false)}
		}), "1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := parse[policyv1ac.PodDisruptionBudgetApplyConfiguration](t, manifest(tc.want))
			if diff := cmp.Diff(want, PodDisruptionBudget(tc.p)); diff != "" {
				t.Errorf("PodDisruptionBudget mismatch (-want +got):\n%s", diff)
			}
			if got := PodDisruptionBudgetEnabled(tc.p); got != tc.enabled {
				t.Errorf("PodDisruptionBudgetEnabled = %t, want %t", got, tc.enabled)
			}
		})
	}
}

func TestSelector(t *testing.T) {
	p := minimal()
	want := "app.kubernetes.io/instance=user-count,app.kubernetes.io/name=projectionist-worker,projectionist.dev/projection=user-count"
	if got := Selector(p); got != want {
		t.Errorf("Selector = %q, want %q", got, want)
	}
	// The selector must select the pods the StatefulSet creates.
	sts, err := StatefulSet(p, 1, Options{WorkerImage: defaultImage})
	if err != nil {
		t.Fatalf("StatefulSet: %v", err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: sts.Spec.Selector.MatchLabels})
	if err != nil {
		t.Fatal(err)
	}
	if sel.String() != want {
		t.Errorf("StatefulSet selector = %q, want %q", sel, want)
	}
	if got, err := metav1.ParseToLabelSelector(want); err != nil {
		t.Fatal(err)
	} else if s, _ := metav1.LabelSelectorAsSelector(got); !s.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("status.selector %q does not select the pod labels %v", want, sts.Spec.Template.Labels)
	}
}

// TestNoAliasing: the built object shares no map with the Projection, so a
// later change of one does not change the other.
func TestNoAliasing(t *testing.T) {
	p := full()
	sts, err := StatefulSet(p, 1, Options{})
	if err != nil {
		t.Fatalf("StatefulSet: %v", err)
	}
	p.Spec.NodeSelector["pool"] = "changed"
	p.Spec.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("1Gi")
	p.Spec.Tolerations[0].Value = "changed"
	p.Spec.Env[0].Value = "changed"
	p.Spec.PodLabels["team"] = "changed"
	p.Spec.PodAnnotations["prometheus.io/port"] = "9090"
	p.Spec.Volumes[0].ConfigMap.Name = "changed"
	again, err := StatefulSet(full(), 1, Options{})
	if err != nil {
		t.Fatalf("StatefulSet: %v", err)
	}
	if diff := cmp.Diff(again, sts); diff != "" {
		t.Errorf("changing the Projection changed the built StatefulSet (-want +got):\n%s", diff)
	}
}
