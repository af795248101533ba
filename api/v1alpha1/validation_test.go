package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/internal/kubetest"
	"github.com/projectionist/projectionist/internal/proctest"
)

// These tests run against a real kube-apiserver with the generated CRD
// (config/crd/bases) installed: the validation under test is the OpenAPI
// schema and CEL rules the API server enforces, not Go code. No controller
// runs.

const namespace = "default"

var (
	env *kubetest.Env
	k8s client.Client
)

func TestMain(m *testing.M) {
	os.Exit(kubetest.RunTests(m, kubetest.Options{}, func(e *kubetest.Env) (_ func() error, err error) {
		env = e
		k8s, err = e.NewClient(v1alpha1.AddToScheme)
		return nil, err
	}))
}

// validSpec is the smallest spec the API server accepts. The tests send
// unstructured objects so that a field left out is really absent from the
// request, as it would be in a user's YAML.
func validSpec() map[string]any {
	return map[string]any{
		"database": map[string]any{
			"secretRef": map[string]any{"name": "projectionist-db"},
		},
	}
}

func newProjection(name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "Projection",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec":       spec,
	}}
}

// objectName derives a unique, valid Projection name from the test's name:
// a DNS label of at most 52 characters starting with a letter, keeping the
// end of the name, where subtests differ.
func objectName(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(t.Name())
	name = regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(name, "-")
	if len(name) > 52 {
		name = name[len(name)-52:]
	}
	return strings.TrimRight(strings.TrimLeft(name, "-0123456789"), "-")
}

// create creates a Projection with spec and fails the test unless the API
// server accepts it.
func create(t *testing.T, spec map[string]any) string {
	t.Helper()
	name := objectName(t)
	if err := k8s.Create(t.Context(), newProjection(name, spec)); err != nil {
		t.Fatalf("creating Projection %s: %v", name, err)
	}
	return name
}

func get(t *testing.T, name string) *v1alpha1.Projection {
	t.Helper()
	var p v1alpha1.Projection
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: namespace, Name: name}, &p); err != nil {
		t.Fatalf("getting Projection %s: %v", name, err)
	}
	return &p
}

// assertInvalid fails the test unless err is the API server's Invalid
// rejection and its message contains every one of want.
func assertInvalid(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted the object; want a rejection containing %q", want)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got error %v (reason %q); want reason Invalid", err, apierrors.ReasonForError(err))
	}
	t.Logf("rejected as expected: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("rejection %q does not contain %q", err.Error(), w)
		}
	}
	// A CEL rule that fails to evaluate (rather than returning false) makes
	// the API server print the CEL error, which says nothing to a user.
	if strings.Contains(err.Error(), "evaluating rule") {
		t.Errorf("rejection %q contains a CEL evaluation error", err.Error())
	}
	// Every error names its field: a rule without a fieldPath on the
	// object itself is reported under "<nil>". The one exception is the
	// API server's own note that it skipped the CEL rules after a
	// required, enum, length or item-count error, which markers cannot
	// change (docs/operations.md, Troubleshooting).
	const skipped = "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; " +
		"correct the existing errors to complete validation"
	if strings.Contains(strings.ReplaceAll(err.Error(), skipped, ""), "<nil>") {
		t.Errorf("rejection %q has an error without a field path", err.Error())
	}
}

func TestCreateRejectsInvalidSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(spec map[string]any)
		want   []string
	}{
		{
			name:   "batchSize 0",
			mutate: func(s map[string]any) { s["batchSize"] = int64(0) },
			want:   []string{"spec.batchSize", "should be greater than or equal to 1"},
		},
		{
			name:   "batchSize 10001",
			mutate: func(s map[string]any) { s["batchSize"] = int64(10001) },
			want:   []string{"spec.batchSize", "should be less than or equal to 10000"},
		},
		{
			name:   "replicas -1",
			mutate: func(s map[string]any) { s["replicas"] = int64(-1) },
			want:   []string{"spec.replicas", "should be a non-negative integer"},
		},
		{
			name:   "replicas 1025",
			mutate: func(s map[string]any) { s["replicas"] = int64(v1alpha1.MaxReplicas + 1) },
			want:   []string{"spec.replicas", "should be less than or equal to 1024"},
		},
		{
			name:   "unknown errorPolicy",
			mutate: func(s map[string]any) { s["errorPolicy"] = "Retry" },
			want:   []string{"spec.errorPolicy", `Unsupported value: "Retry"`, `"Stop", "Skip", "DeadLetter"`},
		},
		{
			name:   "unknown deletionPolicy",
			mutate: func(s map[string]any) { s["deletionPolicy"] = "Delete" },
			want:   []string{"spec.deletionPolicy", `Unsupported value: "Delete"`, `"Retain", "Forget"`},
		},
		{
			name:   "pollInterval 0s",
			mutate: func(s map[string]any) { s["pollInterval"] = "0s" },
			want:   []string{"spec.pollInterval", "pollInterval must be between 1ms and 1h"},
		},
		{
			name:   "pollInterval 2h",
			mutate: func(s map[string]any) { s["pollInterval"] = "2h" },
			want:   []string{"spec.pollInterval", "pollInterval must be between 1ms and 1h"},
		},
		{
			name:   "pollInterval not a duration",
			mutate: func(s map[string]any) { s["pollInterval"] = "soon" },
			want:   []string{"spec.pollInterval", "should match"},
		},
		{
			name:   "rebuildToken too long",
			mutate: func(s map[string]any) { s["rebuildToken"] = strings.Repeat("r", 64) },
			want:   []string{"spec.rebuildToken", "may not be more than 63 bytes"},
		},
		{
			name:   "rebuildToken with a newline",
			mutate: func(s map[string]any) { s["rebuildToken"] = "fix\nbug" },
			want:   []string{"spec.rebuildToken", "should match"},
		},
		{
			name:   "missing database.secretRef",
			mutate: func(s map[string]any) { s["database"] = map[string]any{} },
			want:   []string{"spec.database.secretRef: Required value"},
		},
		{
			name:   "missing database",
			mutate: func(s map[string]any) { delete(s, "database") },
			want:   []string{"spec.database: Required value"},
		},
		{
			name: "empty secretRef name",
			mutate: func(s map[string]any) {
				s["database"] = map[string]any{"secretRef": map[string]any{"name": ""}}
			},
			want: []string{"spec.database.secretRef.name", "should be at least 1 chars long"},
		},
		{
			name: "env sets DATABASE_URL",
			mutate: func(s map[string]any) {
				s["env"] = []any{map[string]any{"name": "DATABASE_URL", "value": "postgres://elsewhere"}}
			},
			want: []string{"spec.env", "env may not set DATABASE_URL"},
		},
		{
			name: "podLabels set a selector label",
			mutate: func(s map[string]any) {
				s["podLabels"] = map[string]any{"team": "shop", "projectionist.dev/projection": "other"}
			},
			want: []string{"spec.podLabels", "podLabels may not set app.kubernetes.io/name"},
		},
		{
			name: "two volumes of one name",
			mutate: func(s map[string]any) {
				v := map[string]any{"name": "scratch", "emptyDir": map[string]any{}}
				s["volumes"] = []any{v, v}
			},
			want: []string{"spec.volumes[1]", "Duplicate value"},
		},
		{
			name: "hostPath volume",
			mutate: func(s map[string]any) {
				s["volumes"] = []any{map[string]any{"name": "host", "hostPath": map[string]any{"path": "/etc"}}}
			},
			want: []string{"spec.volumes", "the volume types the restricted Pod Security Standard allows"},
		},
		{
			name:   "serviceAccountName not a DNS subdomain",
			mutate: func(s map[string]any) { s["serviceAccountName"] = "Projections_SA" },
			want:   []string{"spec.serviceAccountName", "should match"},
		},
		{
			name: "17 imagePullSecrets",
			mutate: func(s map[string]any) {
				var l []any
				for i := range 17 {
					l = append(l, map[string]any{"name": fmt.Sprintf("registry-%d", i)})
				}
				s["imagePullSecrets"] = l
			},
			want: []string{"spec.imagePullSecrets", "must have at most 16 items"},
		},
		{
			name:   "projectionName with a space",
			mutate: func(s map[string]any) { s["projectionName"] = "user count" },
			want:   []string{"spec.projectionName", "should match"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			tt.mutate(spec)
			err := k8s.Create(t.Context(), newProjection(objectName(t), spec))
			assertInvalid(t, err, tt.want...)
		})
	}
}

// TestRejectionsSayItOnce checks the whole text of the API server's
// rejection of each CEL rule's mistake and of a negative replicas: one
// error per mistake, under the field's path (no "<nil>:"). spec.replicas
// has no OpenAPI minimum because the scale subresource already rejects a
// negative value (".spec.replicas: ... should be a non-negative integer"):
// with both, a negative replicas got two errors.
func TestRejectionsSayItOnce(t *testing.T) {
	t.Parallel()
	const (
		env = "env may not set DATABASE_URL, PROJECTION, PARTITION_KEY, POD_NAME, TOTAL_PARTITIONS or HTTP_ADDR: " +
			"the operator sets them from the spec and the pod"
		volumes = "volumes may be configMap, secret, emptyDir, projected, downwardAPI, persistentVolumeClaim, csi or ephemeral: " +
			"the volume types the restricted Pod Security Standard allows"
		podLabels = "podLabels may not set app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/managed-by, " +
			"app.kubernetes.io/component or projectionist.dev/projection: the operator sets them to select the worker pods"
		name = "metadata.name must be a DNS label of at most 52 characters starting with a letter (lowercase letters, digits and '-'), " +
			"since it names the worker StatefulSet, its pods and its Service"
	)
	autoscaling := func(s map[string]any, field string, v any) {
		a := map[string]any{"maxReplicas": int64(4)}
		a[field] = v
		s["autoscaling"] = a
	}
	tests := []struct {
		name   string
		object string // "" for objectName(t)
		mutate func(spec map[string]any)
		want   string // after `Projection.projectionist.dev "NAME" is invalid: `
	}{
		{name: "replicas -1", mutate: func(s map[string]any) { s["replicas"] = int64(-1) },
			want: ".spec.replicas: Invalid value: -1: should be a non-negative integer"},
		{name: "pollInterval 2h", mutate: func(s map[string]any) { s["pollInterval"] = "2h" },
			want: `spec.pollInterval: Invalid value: "2h": pollInterval must be between 1ms and 1h`},
		{name: "env sets DATABASE_URL", mutate: func(s map[string]any) {
			s["env"] = []any{map[string]any{"name": "DATABASE_URL", "value": "postgres://elsewhere"}}
		}, want: "spec.env: Invalid value: " + env},
		{name: "hostPath volume", mutate: func(s map[string]any) {
			s["volumes"] = []any{map[string]any{"name": "host", "hostPath": map[string]any{"path": "/etc"}}}
		}, want: "spec.volumes: Invalid value: " + volumes},
		{name: "podLabels set a selector label", mutate: func(s map[string]any) {
			s["podLabels"] = map[string]any{"projectionist.dev/projection": "other"}
		}, want: "spec.podLabels: Invalid value: " + podLabels},
		{name: "maxUnavailable -1", mutate: func(s map[string]any) {
			s["podDisruptionBudget"] = map[string]any{"maxUnavailable": int64(-1)}
		}, want: "spec.podDisruptionBudget.maxUnavailable: Invalid value: -1: maxUnavailable must be a non-negative number or a percentage such as 25%"},
		{name: "minReplicas above maxReplicas", mutate: func(s map[string]any) { autoscaling(s, "minReplicas", int64(5)) },
			want: "spec.autoscaling.minReplicas: Invalid value: minReplicas must not exceed maxReplicas"},
		{name: "scaleUpStabilizationWindow 2h", mutate: func(s map[string]any) { autoscaling(s, "scaleUpStabilizationWindow", "2h") },
			want: `spec.autoscaling.scaleUpStabilizationWindow: Invalid value: "2h": scaleUpStabilizationWindow must be between 0s and 1h`},
		{name: "scaleDownStabilizationWindow 25h", mutate: func(s map[string]any) { autoscaling(s, "scaleDownStabilizationWindow", "25h") },
			want: `spec.autoscaling.scaleDownStabilizationWindow: Invalid value: "25h": scaleDownStabilizationWindow must be between 0s and 24h`},
		{name: "metadata.name with a dot", object: "user.count2", mutate: func(map[string]any) {},
			want: "metadata: Invalid value: " + name},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			tt.mutate(spec)
			object := tt.object
			if object == "" {
				object = objectName(t)
			}
			err := k8s.Create(t.Context(), newProjection(object, spec))
			assertInvalid(t, err)
			want := fmt.Sprintf("Projection.projectionist.dev %q is invalid: %s", object, tt.want)
			if err.Error() != want {
				t.Errorf("rejection\n%s\nwant\n%s", err, want)
			}
		})
	}
}

// TestCreateRejectsInvalidName checks the names the API server would accept
// for an object but the worker StatefulSet, its pods and Service could not
// carry.
func TestCreateRejectsInvalidName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"a" + strings.Repeat("b", 52), // 53 characters
		"user.count",
		"1user-count",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := k8s.Create(t.Context(), newProjection(name, validSpec()))
			assertInvalid(t, err, "metadata.name must be a DNS label of at most 52 characters")
		})
	}
}

// TestCreateAcceptsBounds checks that the bounds are inclusive and that the
// pollInterval pattern admits the Go durations users write.
func TestCreateAcceptsBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		field string
		value any
	}{
		{"batchSize 1", "batchSize", int64(1)},
		{"batchSize 10000", "batchSize", int64(10000)},
		{"replicas 0", "replicas", int64(0)},
		{"replicas 1024", "replicas", int64(v1alpha1.MaxReplicas)},
		{"pollInterval 1ms", "pollInterval", "1ms"},
		{"pollInterval 1h", "pollInterval", "1h"},
		{"pollInterval 1m30s", "pollInterval", "1m30s"},
		{"pollInterval 1.5s", "pollInterval", "1.5s"},
		{"errorPolicy Skip", "errorPolicy", string(v1alpha1.ErrorPolicySkip)},
		{"errorPolicy DeadLetter", "errorPolicy", string(v1alpha1.ErrorPolicyDeadLetter)},
		{"deletionPolicy Forget", "deletionPolicy", string(v1alpha1.DeletionForget)},
		{"projectionName", "projectionName", "billing.user_count-v2"},
		{"rebuildToken", "rebuildToken", "2026-12-02 fix #42: totals in cents"},
		{"rebuildToken 63", "rebuildToken", strings.Repeat("r", 63)},
		{"imagePullSecrets", "imagePullSecrets", []any{map[string]any{"name": "registry-credentials"}}},
		{"serviceAccountName", "serviceAccountName", "projections.shop-v2"},
		{"podLabels", "podLabels", map[string]any{"team": "shop", "app.kubernetes.io/part-of": "shop"}},
		{"podAnnotations", "podAnnotations", map[string]any{"prometheus.io/scrape": "true"}},
		{"topologySpreadConstraints", "topologySpreadConstraints", []any{map[string]any{
			"maxSkew": int64(1), "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
			"labelSelector": map[string]any{"matchLabels": map[string]any{"projectionist.dev/projection": "x"}},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			spec[tt.field] = tt.value
			create(t, spec)
		})
	}
}

// TestCreateAcceptsCABundle: a CA bundle mounted from a ConfigMap, the
// example of volumes and volumeMounts that the docs give, is stored as
// written.
func TestCreateAcceptsCABundle(t *testing.T) {
	t.Parallel()
	spec := validSpec()
	spec["volumes"] = []any{
		map[string]any{"name": "db-ca", "configMap": map[string]any{"name": "db-ca-bundle"}},
		map[string]any{"name": "scratch", "emptyDir": map[string]any{}},
	}
	spec["volumeMounts"] = []any{
		map[string]any{"name": "db-ca", "mountPath": "/etc/db-ca", "readOnly": true},
		map[string]any{"name": "scratch", "mountPath": "/tmp/scratch"},
	}
	p := get(t, create(t, spec))
	if len(p.Spec.Volumes) != 2 || p.Spec.Volumes[0].ConfigMap == nil || p.Spec.Volumes[0].ConfigMap.Name != "db-ca-bundle" {
		t.Errorf("volumes = %+v, want the db-ca ConfigMap volume and the emptyDir", p.Spec.Volumes)
	}
	if len(p.Spec.VolumeMounts) != 2 || p.Spec.VolumeMounts[0].MountPath != "/etc/db-ca" || !p.Spec.VolumeMounts[0].ReadOnly {
		t.Errorf("volumeMounts = %+v, want db-ca read-only at /etc/db-ca and scratch", p.Spec.VolumeMounts)
	}
}

func TestProjectionNameIsImmutable(t *testing.T) {
	t.Parallel()
	const immutable = "projectionName is immutable"
	tests := []struct {
		name   string
		before string // "" leaves projectionName unset
		patch  string // a JSON merge patch
		want   string // "" when the update must be accepted
	}{
		{name: "changed", before: "a", patch: `{"spec":{"projectionName":"b"}}`, want: immutable},
		{name: "set when unset", before: "", patch: `{"spec":{"projectionName":"b"}}`, want: immutable},
		{name: "unset when set", before: "a", patch: `{"spec":{"projectionName":null}}`, want: immutable},
		{name: "unchanged while another field changes", before: "a", patch: `{"spec":{"projectionName":"a","batchSize":500}}`},
		{name: "still unset while another field changes", before: "", patch: `{"spec":{"batchSize":500}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			if tt.before != "" {
				spec["projectionName"] = tt.before
			}
			name := create(t, spec)

			p := &v1alpha1.Projection{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
			err := k8s.Patch(t.Context(), p, client.RawPatch(types.MergePatchType, []byte(tt.patch)))
			if tt.want != "" {
				assertInvalid(t, err, "spec.projectionName: Forbidden: "+tt.want)
				if got := get(t, name).Spec.ProjectionName; got != tt.before {
					t.Errorf("after the rejected update, projectionName = %q; want %q", got, tt.before)
				}
				return
			}
			if err != nil {
				t.Fatalf("patching %s: %v", tt.patch, err)
			}
			if got := get(t, name).Spec.BatchSize; got == nil || *got != 500 {
				t.Errorf("after the update, batchSize = %v; want 500", got)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	name := create(t, validSpec())

	want := v1alpha1.ProjectionSpec{
		Replicas:       ptr.To[int32](1),
		BatchSize:      ptr.To[int32](100),
		PollInterval:   &metav1.Duration{Duration: 100 * time.Millisecond},
		ErrorPolicy:    v1alpha1.ErrorPolicyStop,
		DeletionPolicy: v1alpha1.DeletionRetain,
		Database: v1alpha1.DatabaseSpec{
			SecretRef: v1alpha1.SecretKeySelector{Name: "projectionist-db", Key: "dsn"},
		},
	}
	if diff := cmp.Diff(want, get(t, name).Spec); diff != "" {
		t.Errorf("spec read back (-want +got):\n%s", diff)
	}
}

func TestScaleSubresource(t *testing.T) {
	t.Parallel()
	name := create(t, validSpec())

	out, err := env.Kubectl(t.Context(), "scale", "projection", name, "--replicas=3", "--namespace", namespace)
	if err != nil {
		t.Fatalf("kubectl scale: %v\n%s", err, out)
	}
	if got := get(t, name).Spec.Replicas; got == nil || *got != 3 {
		t.Errorf("after kubectl scale --replicas=3, spec.replicas = %v; want 3", deref(got))
	}

	// A scale is an update of the Projection, validated like any other.
	out, err = env.Kubectl(t.Context(), "scale", "projection", name, "--replicas=1025", "--namespace", namespace)
	if err == nil {
		t.Errorf("kubectl scale --replicas=1025 succeeded; want a rejection\n%s", out)
	} else if !strings.Contains(out, "less than or equal to 1024") {
		t.Errorf("kubectl scale --replicas=1025 output %q does not say the bound", out)
	}
	if got := get(t, name).Spec.Replicas; got == nil || *got != 3 {
		t.Errorf("after the rejected scale, spec.replicas = %v; want 3", deref(got))
	}
}

// TestExplain checks that `kubectl explain projection.spec` documents every
// spec field: the API types' comments are the users' reference.
func TestExplain(t *testing.T) {
	t.Parallel()
	// The API server publishes a new CRD's OpenAPI a moment after the CRD is
	// established.
	var out string
	err := poll(t.Context(), 30*time.Second, func(ctx context.Context) error {
		var err error
		out, err = env.Kubectl(ctx, "explain", "projection.spec")
		if err != nil {
			return fmt.Errorf("kubectl explain projection.spec: %w\n%s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	fields := reflect.TypeFor[v1alpha1.ProjectionSpec]()
	for i := range fields.NumField() {
		name, _, _ := strings.Cut(fields.Field(i).Tag.Get("json"), ",")
		// A field's line ("  name\t<type>"), maybe its enum, then its
		// description, which starts with the field's name (house style).
		q := regexp.QuoteMeta(name)
		re := regexp.MustCompile(`(?m)^\s+` + q + `\s+<[^>]+>.*\n(?:\s+enum:.*\n)?\s+` + q + ` \S`)
		if !re.MatchString(out) {
			t.Errorf("kubectl explain projection.spec does not describe %q:\n%s", name, out)
		}
	}
}

func TestPrinterColumns(t *testing.T) {
	t.Parallel()
	name := create(t, validSpec())

	out, err := env.Kubectl(t.Context(), "get", "projections", name, "--namespace", namespace)
	if err != nil {
		t.Fatalf("kubectl get projections: %v\n%s", err, out)
	}
	header, _, _ := strings.Cut(out, "\n")
	want := []string{"NAME", "READY", "STATUS", "PARTITIONS", "LAG", "AGE"}
	if diff := cmp.Diff(want, strings.Fields(header)); diff != "" {
		t.Errorf("kubectl get projections columns (-want +got):\n%s\noutput:\n%s", diff, out)
	}
}

// TestConfigApplies installs config/default (CRD, RBAC, the operator's
// Namespace and Deployment) and the samples with kubectl, as a user would:
// the manifests must pass the API server's validation, and the operator's
// pod template must meet the restricted Pod Security Standard its namespace
// enforces (the API server warns at once when a Deployment's would not).
func TestConfigApplies(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"apply", "--server-side", "--kustomize", "../../config/default"},
		{"apply", "--server-side", "--namespace", namespace, "--filename", "../../config/samples/db-secret.yaml"},
		{"apply", "--server-side", "--namespace", namespace, "--kustomize", "../../config/samples"},
	} {
		out, err := env.Kubectl(t.Context(), args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if strings.Contains(out, "Warning") {
			t.Errorf("kubectl %s warns:\n%s", strings.Join(args, " "), out)
		}
	}

	p := get(t, "user-count")
	if got, want := p.EffectiveProjectionName(), "user_count"; got != want {
		t.Errorf("sample user-count runs projection %q; want %q", got, want)
	}
	if got := p.Spec.Replicas; got == nil || *got != 2 {
		t.Errorf("sample user-count has spec.replicas = %v; want 2", deref(got))
	}
	if got, want := get(t, "activity-log").EffectiveProjectionName(), "activity_log"; got != want {
		t.Errorf("sample activity-log runs projection %q; want %q", got, want)
	}
	r := get(t, "revenue")
	if got, want := r.EffectiveProjectionName(), "revenue"; got != want {
		t.Errorf("sample revenue runs projection %q; want %q", got, want)
	}
	if got := r.Spec.BatchSize; got == nil || *got != 500 {
		t.Errorf("sample revenue has spec.batchSize = %v; want 500", deref(got))
	}
}

// poll calls f until it succeeds or timeout passes, and returns its last
// error.
func poll(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return proctest.Until(timeout, 200*time.Millisecond, func() error { return f(ctx) })
}

func deref(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}
