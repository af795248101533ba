// Tests of the Helm chart in projectionist/: they render it with the pinned
// Helm in bin/ (make helm) and assert on the objects it produces.
package charts_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "projectionist"
	release  = "test"
	// namespace is the release namespace of every rendering.
	namespace = "ops"
	// fullname is the object name prefix for release "test".
	fullname = "test-projectionist"
	// defaultImage is image.repository:appVersion, the chart's defaults.
	defaultImage = "docker.io/projectionist/projectionist:dev"
)

// helm returns the path of bin/helm, failing the test when it is missing.
func helm(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "bin", "helm"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s not found or not executable: run make helm", path)
	}
	return path
}

// runHelm runs bin/helm with args and returns its standard output, failing
// the test (with standard error) when it exits non-zero.
func runHelm(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("helm %s wrote to stderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	return stdout.Bytes()
}

// rendered is the output of helm template: the YAML and its objects.
type rendered struct {
	yaml    []byte
	objects []object
}

// object is one rendered document.
type object struct {
	Kind, Name, Namespace string
	raw                   []byte
}

// render runs helm template for release "test" in namespace "ops" with
// values given as YAML (empty for the chart's defaults).
func render(t *testing.T, values string) rendered {
	t.Helper()
	return renderWith(t, values)
}

// renderWith is render with more helm template arguments (such as
// --api-versions).
func renderWith(t *testing.T, values string, extra ...string) rendered {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--namespace", namespace}, extra...)
	if values != "" {
		// Not in t.TempDir(): its name holds the test's, and helm splits
		// --values at commas.
		dir, err := os.MkdirTemp("", "chart-values-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		file := filepath.Join(dir, "values.yaml")
		if err := os.WriteFile(file, []byte(values), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", file)
	}
	out := runHelm(t, args...)
	return rendered{yaml: out, objects: splitObjects(t, out)}
}

// splitObjects parses a multi-document YAML stream, skipping empty documents.
func splitObjects(t *testing.T, stream []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var objs []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("reading rendered YAML: %v", err)
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("parsing rendered document: %v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue // comments only
		}
		objs = append(objs, object{Kind: meta.Kind, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, raw: doc})
	}
}

// get decodes the rendered object of kind and name into into, strictly (an
// unknown field is a template mistake), failing the test when it is absent.
func (r rendered) get(t *testing.T, kind, name string, into any) {
	t.Helper()
	for _, o := range r.objects {
		if o.Kind == kind && o.Name == name {
			if err := yaml.UnmarshalStrict(o.raw, into); err != nil {
				t.Fatalf("decoding %s %s: %v\n%s", kind, name, err, o.raw)
			}
			return
		}
	}
	t.Fatalf("no %s %s in the rendered chart; have %v", kind, name, r.names())
}

// has reports whether an object of kind and name was rendered.
func (r rendered) has(kind, name string) bool {
	return slices.ContainsFunc(r.objects, func(o object) bool { return o.Kind == kind && o.Name == name })
}

func (r rendered) names() []string {
	var names []string
	for _, o := range r.objects {
		names = append(names, o.Kind+"/"+o.Name)
	}
	return names
}

// operator returns the rendered Deployment and its container.
func (r rendered) operator(t *testing.T) (appsv1.Deployment, corev1.Container) {
	t.Helper()
	var d appsv1.Deployment
	r.get(t, "Deployment", fullname, &d)
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("Deployment has %d containers, want 1", n)
	}
	return d, d.Spec.Template.Spec.Containers[0]
}

// readObject decodes a YAML file of the repository (path relative to its
// root) into into.
func readObject(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
}

// crdFile is the CRD's name in config/crd/bases and in the chart's files/crds.
const crdFile = "projectionist.dev_projections.yaml"

// crdName is the name of the Projection CRD.
const crdName = "projections.projectionist.dev"

func TestCRDIsTheGeneratedOne(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", crdFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(chartDir, "files", "crds", crdFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s/files/crds/%s differs from config/crd/bases/%s: run make manifests (or make chart-sync)\n%s",
			chartDir, crdFile, crdFile, cmp.Diff(string(want), string(got)))
	}
	// Exactly one CRD file, and no crds/ directory: Helm would install
	// whatever is there on the first install, beside the templated CRD.
	entries, err := os.ReadDir(filepath.Join(chartDir, "files", "crds"))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	if diff := cmp.Diff([]string{crdFile}, files); diff != "" {
		t.Errorf("files in files/crds/ (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(chartDir, "crds")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s/crds exists (%v): the CRD is a template (templates/crds.yaml)", chartDir, err)
	}

	// The rendered CRD is the generated one, field for field, plus the
	// chart's labels and (crds.keep) the resource policy.
	var wantObj map[string]any
	if err := yaml.Unmarshal(want, &wantObj); err != nil {
		t.Fatal(err)
	}
	var rendered map[string]any
	render(t, "").get(t, "CustomResourceDefinition", crdName, &rendered)
	meta := rendered["metadata"].(map[string]any)
	labels, _ := meta["labels"].(map[string]any)
	if labels["app.kubernetes.io/managed-by"] != "Helm" || labels["app.kubernetes.io/instance"] != release {
		t.Errorf("CRD labels = %v, want the chart's", labels)
	}
	delete(meta, "labels")
	annotations, _ := meta["annotations"].(map[string]any)
	delete(annotations, "helm.sh/resource-policy")
	if diff := cmp.Diff(wantObj, rendered); diff != "" {
		t.Errorf("rendered CRD differs from config/crd/bases/%s beyond labels and annotations (-want +got):\n%s", crdFile, diff)
	}
}

// TestCRDValues: crds.install renders the CRD or not; crds.keep puts the
// resource policy that makes helm uninstall leave it.
func TestCRDValues(t *testing.T) {
	const keep = "helm.sh/resource-policy"
	for _, tc := range []struct {
		values     string
		installed  bool
		wantPolicy string
	}{
		{"", true, "keep"},
		{"crds: {install: true, keep: true}", true, "keep"},
		{"crds: {keep: false}", true, ""},
		{"crds: {install: false}", false, ""},
		{"crds: {install: false, keep: false}", false, ""},
	} {
		t.Run(tc.values, func(t *testing.T) {
			t.Parallel()
			r := render(t, tc.values)
			if got := r.has("CustomResourceDefinition", crdName); got != tc.installed {
				t.Fatalf("CRD rendered = %v, want %v: %v", got, tc.installed, r.names())
			}
			if !tc.installed {
				return
			}
			var crd struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			}
			for _, o := range r.objects {
				if o.Kind == "CustomResourceDefinition" { // not get: decoded loosely
					if err := yaml.Unmarshal(o.raw, &crd); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, ok := crd.Metadata.Annotations[keep]
			if tc.wantPolicy == "" && ok {
				t.Errorf("annotation %s=%q, want none", keep, got)
			}
			if tc.wantPolicy != "" && got != tc.wantPolicy {
				t.Errorf("annotation %s=%q, want %q", keep, got, tc.wantPolicy)
			}
			if crd.Metadata.Annotations["controller-gen.kubebuilder.io/version"] == "" {
				t.Errorf("annotations %v lack controller-gen's", crd.Metadata.Annotations)
			}
		})
	}
}

func TestRBACIsTheGeneratedOne(t *testing.T) {
	r := render(t, "")

	// Each role's rules are those of its file in config/rbac; the fix names
	// the make target that brings the chart in line.
	for _, role := range []struct{ file, kind, name, fix string }{
		{"config/rbac/role.yaml", "ClusterRole", fullname + "-manager", "make manifests"},
		{"config/rbac/leader_election_role.yaml", "Role", fullname + "-leader-election", "make chart-sync"},
		{"config/rbac/metrics_auth_role.yaml", "ClusterRole", fullname + "-metrics-auth", "make chart-sync"},
		{"config/rbac/metrics_reader_role.yaml", "ClusterRole", fullname + "-metrics-reader", "make chart-sync"},
	} {
		var want, got rbacv1.ClusterRole // a Role has the same fields but aggregationRule
		readObject(t, role.file, &want)
		r.get(t, role.kind, role.name, &got)
		if len(want.Rules) == 0 {
			t.Fatalf("%s has no rules", role.file)
		}
		if diff := cmp.Diff(want.Rules, got.Rules); diff != "" {
			t.Errorf("%s %s rules differ from %s (run %s) (-want +got):\n%s", role.kind, role.name, role.file, role.fix, diff)
		}
	}

	// The bindings grant their role to the operator's ServiceAccount.
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: fullname, Namespace: namespace}}
	for _, binding := range []struct{ kind, name, roleKind string }{
		{"ClusterRoleBinding", fullname + "-manager", "ClusterRole"},
		{"ClusterRoleBinding", fullname + "-metrics-auth", "ClusterRole"},
		{"RoleBinding", fullname + "-leader-election", "Role"},
	} {
		var got rbacv1.RoleBinding // a ClusterRoleBinding has the same fields
		r.get(t, binding.kind, binding.name, &got)
		if diff := cmp.Diff(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: binding.roleKind, Name: binding.name}, got.RoleRef); diff != "" {
			t.Errorf("%s %s roleRef (-want +got):\n%s", binding.kind, binding.name, diff)
		}
		if diff := cmp.Diff(subjects, got.Subjects); diff != "" {
			t.Errorf("%s %s subjects (-want +got):\n%s", binding.kind, binding.name, diff)
		}
	}
}

func TestDefaults(t *testing.T) {
	r := render(t, "")

	want := []string{
		"CustomResourceDefinition/" + crdName,
		"ServiceAccount/" + fullname,
		"ClusterRole/" + fullname + "-manager",
		"ClusterRoleBinding/" + fullname + "-manager",
		"ClusterRole/" + fullname + "-metrics-auth",
		"ClusterRoleBinding/" + fullname + "-metrics-auth",
		"ClusterRole/" + fullname + "-metrics-reader",
		"Role/" + fullname + "-leader-election",
		"RoleBinding/" + fullname + "-leader-election",
		"Service/" + fullname + "-metrics",
		"Deployment/" + fullname,
		"PodDisruptionBudget/" + fullname,
	}
	if diff := cmp.Diff(want, r.names(), cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("rendered objects (-want +got):\n%s", diff)
	}
	for _, o := range r.objects {
		clusterScoped := o.Kind == "ClusterRole" || o.Kind == "ClusterRoleBinding" || o.Kind == "CustomResourceDefinition"
		if got, want := o.Namespace, namespace; !clusterScoped && got != want {
			t.Errorf("%s %s: namespace %q, want the release namespace %q", o.Kind, o.Name, got, want)
		}
	}

	d, c := r.operator(t)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != fullname {
		t.Errorf("serviceAccountName = %q, want %q", pod.ServiceAccountName, fullname)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector label %s=%s is not on the pod template (labels %v)", k, v, d.Spec.Template.Labels)
		}
	}
	if c.Image != defaultImage {
		t.Errorf("image = %q, want %q", c.Image, defaultImage)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy = %q, want IfNotPresent", c.ImagePullPolicy)
	}
	wantArgs := []string{
		"operator",
		"--leader-elect",
		"--metrics-addr=:8080",
		"--metrics-secure=true",
		"--health-probe-addr=:8081",
		"--worker-image=" + defaultImage,
		"--log-level=info",
	}
	if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]corev1.EnvVar{{Name: "WORKER_IMAGE", Value: defaultImage}}, c.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	wantPorts := []corev1.ContainerPort{
		{Name: "metrics", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		{Name: "health", ContainerPort: 8081, Protocol: corev1.ProtocolTCP},
	}
	if diff := cmp.Diff(wantPorts, c.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	probe := func(path string, delay, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("health")}},
			InitialDelaySeconds: delay,
			PeriodSeconds:       period,
		}
	}
	if diff := cmp.Diff(probe("/healthz", 15, 20), c.LivenessProbe); diff != "" {
		t.Errorf("livenessProbe (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(probe("/readyz", 0, 2), c.ReadinessProbe); diff != "" {
		t.Errorf("readinessProbe (-want +got):\n%s", diff)
	}

	// The restricted Pod Security Standard.
	yes, no := true, false
	wantPodSC := &corev1.PodSecurityContext{
		RunAsNonRoot:   &yes,
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if diff := cmp.Diff(wantPodSC, pod.SecurityContext); diff != "" {
		t.Errorf("pod securityContext (-want +got):\n%s", diff)
	}
	wantSC := &corev1.SecurityContext{
		AllowPrivilegeEscalation: &no,
		ReadOnlyRootFilesystem:   &yes,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	if diff := cmp.Diff(wantSC, c.SecurityContext); diff != "" {
		t.Errorf("container securityContext (-want +got):\n%s", diff)
	}

	wantResources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	if diff := cmp.Diff(wantResources, c.Resources); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	if pod.Volumes != nil || c.VolumeMounts != nil {
		t.Errorf("volumes %v, volumeMounts %v: want none by default", pod.Volumes, c.VolumeMounts)
	}
	if pod.NodeSelector != nil || pod.Tolerations != nil || pod.Affinity != nil {
		t.Errorf("nodeSelector %v, tolerations %v, affinity %v: want none by default", pod.NodeSelector, pod.Tolerations, pod.Affinity)
	}

	var svc corev1.Service
	r.get(t, "Service", fullname+"-metrics", &svc)
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, svc.Spec.Selector); diff != "" {
		t.Errorf("metrics Service selector, against the Deployment's (-want +got):\n%s", diff)
	}
	wantSvcPorts := []corev1.ServicePort{{Name: "metrics", Port: 8080, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP,
		AppProtocol: ptr.To("https")}}
	if diff := cmp.Diff(wantSvcPorts, svc.Spec.Ports); diff != "" {
		t.Errorf("metrics Service ports (-want +got):\n%s", diff)
	}
}

// valuesTest is a row of TestValues and TestMonitoring: the chart rendered
// with values, then checked by check.
type valuesTest struct {
	name   string
	values string
	check  func(t *testing.T, r rendered)
}

func TestValues(t *testing.T) {
	tests := []valuesTest{{
		name:   "image tag is also the worker image's",
		values: "image: {tag: v1.2.3, pullPolicy: Always}",
		check: func(t *testing.T, r rendered) {
			c := wantImages(t, r, "docker.io/projectionist/projectionist:v1.2.3", "docker.io/projectionist/projectionist:v1.2.3")
			if c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("imagePullPolicy = %q, want Always", c.ImagePullPolicy)
			}
		},
	}, {
		name:   "image repository is also the worker image's",
		values: "image: {repository: registry.example/p}",
		check:  func(t *testing.T, r rendered) { wantImages(t, r, "registry.example/p:dev", "registry.example/p:dev") },
	}, {
		name:   "worker image",
		values: "workerImage: {repository: registry.example/workers, tag: w1}",
		check:  func(t *testing.T, r rendered) { wantImages(t, r, defaultImage, "registry.example/workers:w1") },
	}, {
		name:   "worker image repository with the operator's tag",
		values: "image: {tag: v2}\nworkerImage: {repository: registry.example/workers}",
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			wantWorker(t, c, "registry.example/workers:v2")
		},
	}, {
		name:   "watch namespace, log level, status interval",
		values: "watchNamespace: demo\nlogLevel: debug\nstatusInterval: 30s",
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			wantArgs(t, c, "--watch-namespace=demo", "--log-level=debug", "--status-interval=30s")
		},
	}, {
		name:   "partition indexes",
		values: "partitionIndexes: {minPartitions: 0, retention: 2h}",
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			for _, arg := range []string{"--partition-index-min-partitions=0", "--partition-index-retention=2h"} {
				if !slices.Contains(c.Args, arg) {
					t.Errorf("args %q lack %s", c.Args, arg)
				}
			}
		},
	}, {
		name:   "no watch namespace by default",
		values: "",
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			for _, arg := range c.Args {
				if strings.HasPrefix(arg, "--watch-namespace") || strings.HasPrefix(arg, "--status-interval") || strings.HasPrefix(arg, "--partition-index") {
					t.Errorf("args %q have %s", c.Args, arg)
				}
			}
		},
	}, {
		name:   "leader election off",
		values: "leaderElection: {enabled: false}\nreplicaCount: 1",
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			if slices.Contains(c.Args, "--leader-elect") {
				t.Errorf("args %q have --leader-elect", c.Args)
			}
			if r.has("Role", fullname+"-leader-election") || r.has("RoleBinding", fullname+"-leader-election") {
				t.Errorf("leader-election Role or RoleBinding rendered: %v", r.names())
			}
		},
	}, {
		name:   "replicas",
		values: "replicaCount: 3",
		check: func(t *testing.T, r rendered) {
			d, _ := r.operator(t)
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
				t.Errorf("replicas = %v, want 3", d.Spec.Replicas)
			}
		},
	}, {
		name:   "metrics port, no Service",
		values: "metrics: {port: 9090, service: {enabled: false}}",
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			wantArgs(t, c, "--metrics-addr=:9090")
			if c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9090 {
				t.Errorf("first port = %+v, want metrics on 9090", c.Ports[0])
			}
			if r.has("Service", fullname+"-metrics") {
				t.Errorf("metrics Service rendered: %v", r.names())
			}
		},
	}, {
		name:   "plain HTTP metrics",
		values: "metrics: {secure: false}",
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			wantArgs(t, c, "--metrics-secure=false")
			for _, name := range []string{"-metrics-auth", "-metrics-reader"} {
				if r.has("ClusterRole", fullname+name) || r.has("ClusterRoleBinding", fullname+name) {
					t.Errorf("%s RBAC rendered for plain HTTP metrics: %v", name, r.names())
				}
			}
			var svc corev1.Service
			r.get(t, "Service", fullname+"-metrics", &svc)
			if p := svc.Spec.Ports[0].AppProtocol; p == nil || *p != "http" {
				t.Errorf("metrics Service appProtocol = %v, want http", p)
			}
		},
	}, {
		name:   "metrics certificate from a Secret",
		values: "metrics: {certSecret: metrics-tls}",
		check: func(t *testing.T, r rendered) {
			d, c := r.operator(t)
			wantArgs(t, c, "--metrics-cert-dir=/etc/projectionist/metrics-certs")
			wantMounts := []corev1.VolumeMount{{Name: "metrics-certs", MountPath: "/etc/projectionist/metrics-certs", ReadOnly: true}}
			if diff := cmp.Diff(wantMounts, c.VolumeMounts); diff != "" {
				t.Errorf("volumeMounts (-want +got):\n%s", diff)
			}
			wantVolumes := []corev1.Volume{{Name: "metrics-certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: "metrics-tls", Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key"}},
			}}}}
			if diff := cmp.Diff(wantVolumes, d.Spec.Template.Spec.Volumes); diff != "" {
				t.Errorf("volumes (-want +got):\n%s", diff)
			}
		},
	}, {
		name: "resources",
		values: `
resources:
  requests: {cpu: 100m, memory: 128Mi}
  limits: {cpu: null, memory: 1Gi}`,
		check: func(t *testing.T, r rendered) {
			_, c := r.operator(t)
			want := corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			}
			if diff := cmp.Diff(want, c.Resources); diff != "" {
				t.Errorf("resources (-want +got):\n%s", diff)
			}
		},
	}, {
		name: "scheduling and pod annotations",
		values: `
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: ops, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
podAnnotations: {prometheus.io/scrape: "true"}`,
		check: func(t *testing.T, r rendered) {
			d, _ := r.operator(t)
			pod := d.Spec.Template.Spec
			if diff := cmp.Diff(map[string]string{"kubernetes.io/os": "linux"}, pod.NodeSelector); diff != "" {
				t.Errorf("nodeSelector (-want +got):\n%s", diff)
			}
			wantTol := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "ops", Effect: corev1.TaintEffectNoSchedule}}
			if diff := cmp.Diff(wantTol, pod.Tolerations); diff != "" {
				t.Errorf("tolerations (-want +got):\n%s", diff)
			}
			wantAff := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}},
				}}},
			}}
			if diff := cmp.Diff(wantAff, pod.Affinity); diff != "" {
				t.Errorf("affinity (-want +got):\n%s", diff)
			}
			wantAnn := map[string]string{"kubectl.kubernetes.io/default-container": "manager", "prometheus.io/scrape": "true"}
			if diff := cmp.Diff(wantAnn, d.Spec.Template.Annotations); diff != "" {
				t.Errorf("pod annotations (-want +got):\n%s", diff)
			}
		},
	}, {
		name: "operator pod settings and extra arguments",
		values: `
podLabels: {team: platform}
priorityClassName: system-cluster-critical
topologySpreadConstraints:
- {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
extraArgs: [--max-concurrent-reconciles=8]
extraEnv: [{name: GOMEMLIMIT, value: 200MiB}]`,
		check: func(t *testing.T, r rendered) {
			d, c := r.operator(t)
			spec := d.Spec.Template.Spec
			if d.Spec.Template.Labels["team"] != "platform" || d.Spec.Template.Labels["app.kubernetes.io/name"] == "" {
				t.Errorf("pod labels = %v, want team=platform beside the chart's", d.Spec.Template.Labels)
			}
			if spec.PriorityClassName != "system-cluster-critical" {
				t.Errorf("priorityClassName = %q", spec.PriorityClassName)
			}
			if tsc := spec.TopologySpreadConstraints; len(tsc) != 1 || tsc[0].TopologyKey != "topology.kubernetes.io/zone" ||
				tsc[0].LabelSelector == nil || !cmp.Equal(tsc[0].LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
				t.Errorf("topologySpreadConstraints = %+v, want the zone spread selecting the operator's pods", tsc)
			}
			if c.Args[len(c.Args)-1] != "--max-concurrent-reconciles=8" {
				t.Errorf("args %q do not end with the extra argument", c.Args)
			}
			if !slices.Contains(c.Env, corev1.EnvVar{Name: "GOMEMLIMIT", Value: "200MiB"}) || c.Env[0].Name != "WORKER_IMAGE" {
				t.Errorf("env = %+v, want WORKER_IMAGE then GOMEMLIMIT", c.Env)
			}
		},
	}, {
		name:   "PodDisruptionBudget and NetworkPolicy",
		values: "podDisruptionBudget: {maxUnavailable: 0}\nnetworkPolicy: {enabled: true, metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}",
		check: func(t *testing.T, r rendered) {
			d, _ := r.operator(t)
			var pdb policyv1.PodDisruptionBudget
			r.get(t, "PodDisruptionBudget", fullname, &pdb)
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 0 ||
				!cmp.Equal(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
				t.Errorf("PodDisruptionBudget spec = %+v, want maxUnavailable 0 and the Deployment's selector", pdb.Spec)
			}
			var np networkingv1.NetworkPolicy
			r.get(t, "NetworkPolicy", fullname, &np)
			if len(np.Spec.Ingress) != 2 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].Ports[0].Port.String() != "metrics" ||
				np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
				t.Errorf("NetworkPolicy ingress = %+v, want metrics from the monitoring namespace, then health", np.Spec.Ingress)
			}
			if !cmp.Equal(np.Spec.PodSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
				t.Errorf("NetworkPolicy selects %v, the Deployment %v", np.Spec.PodSelector.MatchLabels, d.Spec.Selector.MatchLabels)
			}
		},
	}, {
		name:   "no PodDisruptionBudget",
		values: "podDisruptionBudget: {enabled: false}",
		check: func(t *testing.T, r rendered) {
			if r.has("PodDisruptionBudget", fullname) || r.has("NetworkPolicy", fullname) {
				t.Errorf("rendered %v", r.names())
			}
		},
	}, {
		name:   "existing ServiceAccount",
		values: "serviceAccount: {create: false, name: ops-operator}",
		check: func(t *testing.T, r rendered) {
			d, _ := r.operator(t)
			if got := d.Spec.Template.Spec.ServiceAccountName; got != "ops-operator" {
				t.Errorf("serviceAccountName = %q, want ops-operator", got)
			}
			if r.has("ServiceAccount", "ops-operator") || r.has("ServiceAccount", fullname) {
				t.Errorf("ServiceAccount rendered: %v", r.names())
			}
			var crb rbacv1.ClusterRoleBinding
			r.get(t, "ClusterRoleBinding", fullname+"-manager", &crb)
			want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "ops-operator", Namespace: namespace}}
			if diff := cmp.Diff(want, crb.Subjects); diff != "" {
				t.Errorf("ClusterRoleBinding subjects (-want +got):\n%s", diff)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.check(t, render(t, tt.values))
		})
	}
}

// wantImages checks the operator's image and the worker image it is
// given, and returns the operator's container.
func wantImages(t *testing.T, r rendered, operator, worker string) corev1.Container {
	t.Helper()
	_, c := r.operator(t)
	if c.Image != operator {
		t.Errorf("image = %q, want %q", c.Image, operator)
	}
	wantWorker(t, c, worker)
	return c
}

// wantArgs checks that c has every one of args.
func wantArgs(t *testing.T, c corev1.Container, args ...string) {
	t.Helper()
	for _, arg := range args {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %q lack %s", c.Args, arg)
		}
	}
}

// wantWorker checks the worker image in --worker-image and $WORKER_IMAGE.
func wantWorker(t *testing.T, c corev1.Container, want string) {
	t.Helper()
	wantArgs(t, c, "--worker-image="+want)
	if diff := cmp.Diff([]corev1.EnvVar{{Name: "WORKER_IMAGE", Value: want}}, c.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestMetricsCertificateNeedsSecureMetrics(t *testing.T) {
	out, err := exec.Command(helm(t), "template", release, chartDir, "--set", "metrics.secure=false,metrics.certSecret=metrics-tls").CombinedOutput()
	if want := "metrics.certSecret needs metrics.secure"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("helm template with a certificate for plain HTTP: err %v, want an error containing %q:\n%s", err, want, out)
	}
}

func TestExistingServiceAccountNeedsAName(t *testing.T) {
	cmd := exec.Command(helm(t), "template", release, chartDir, "--set", "serviceAccount.create=false")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("helm template succeeded without serviceAccount.name:\n%s", out)
	}
	if !strings.Contains(string(out), "serviceAccount.name is required") {
		t.Errorf("helm template failed without naming serviceAccount.name:\n%s", out)
	}
}

func TestLint(t *testing.T) {
	out := runHelm(t, "lint", chartDir, "--strict")
	if !strings.Contains(string(out), "1 chart(s) linted, 0 chart(s) failed") {
		t.Errorf("helm lint --strict:\n%s", out)
	}
}

// TestSchemaRefusesBadValues: values.schema.json makes helm refuse a typo
// or a value of the wrong type, in helm lint and helm template alike,
// instead of silently ignoring it.
func TestSchemaRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"replicaCont=2", "additional properties 'replicaCont' not allowed"},
		{"replicaCount=two", "at '/replicaCount': got string, want integer"},
		{"image.pullPolicy=Sometimes", "at '/image/pullPolicy'"},
		{"logLevel=verbose", "at '/logLevel'"},
		{"metrics.prot=9090", "additional properties 'prot' not allowed"},
		{"statusInterval=soon", "at '/statusInterval'"},
		{"partitionIndexes.minPartitions=-1", "at '/partitionIndexes/minPartitions'"},
		{"extraArgs=--max-concurrent-reconciles=8", "at '/extraArgs': got string, want array"},
		{"extraEnv[0].value=x", "at '/extraEnv/0': missing property 'name'"},
		{"podLabels.tier=1", "at '/podLabels/tier': got number, want string"},
		{"topologySpreadConstraints=zone", "at '/topologySpreadConstraints': got string, want array"},
		{"priorityClassName[0]=high", "at '/priorityClassName'"},
		{"monitoring.podMonitr.enabled=true", "additional properties 'podMonitr' not allowed"},
		{"monitoring.podMonitor.enabled=yes", "at '/monitoring/podMonitor/enabled': got string, want boolean"},
		{"monitoring.serviceMonitor.interval=often", "at '/monitoring/serviceMonitor/interval'"},
		{"monitoring.prometheusRule.lagEventsThreshold=lots", "at '/monitoring/prometheusRule/lagEventsThreshold'"},
		{"monitoring.prometheusRule.batchDurationSeconds=0", "at '/monitoring/prometheusRule/batchDurationSeconds'"},
		{"monitoring.prometheusRule.batchDurationSeconds=fast", "at '/monitoring/prometheusRule/batchDurationSeconds'"},
		{"monitoring.prometheusRule.batchDurationSeconds=0.0", "at '/monitoring/prometheusRule/batchDurationSeconds'"},
		{"monitoring.dashboard.label.team=a", "additional properties 'label' not allowed"},
		{"crds.instal=false", "additional properties 'instal' not allowed"},
		{"metrics.secure=maybe", "at '/metrics/secure': got string, want boolean"},
		{"metrics.certSecret=Bad_Name", "at '/metrics/certSecret'"},
		{"monitoring.serviceMonitor.bearerTokenSecret.nam=x", "additional properties 'nam' not allowed"},
		{"crds.install=no", "at '/crds/install': got string, want boolean"},
		{"crds.keep=1", "at '/crds/keep': got number, want boolean"},
	} {
		for _, cmd := range [][]string{{"template", release, chartDir}, {"lint", chartDir, "--strict"}} {
			out, err := exec.Command(helm(t), append(cmd, "--set", tc.set)...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("helm %s --set %s: err %v, want an error containing %q:\n%s", cmd[0], tc.set, err, tc.want, out)
			}
		}
	}
	// A number through --set passes.
	if out, err := exec.Command(helm(t), "template", release, chartDir, "--set", "replicaCount=2").CombinedOutput(); err != nil {
		t.Errorf("helm template --set replicaCount=2: %v\n%s", err, out)
	}
	// --set passes 0.5 as a string: the schema takes a decimal string, and
	// the rule gets it as written.
	out, err := exec.Command(helm(t), "template", release, chartDir, prometheusOperator,
		"--set", "monitoring.prometheusRule.enabled=true,monitoring.prometheusRule.batchDurationSeconds=0.5").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "(rate(projectionist_batch_duration_seconds_bucket[5m]))) > 0.5\n") {
		t.Errorf("helm template --set monitoring.prometheusRule.batchDurationSeconds=0.5: err %v, want the rule's threshold 0.5:\n%s", err, out)
	}
}
