//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

const crdName = "projections.projectionist.dev"

// Load: users the generator spreads events over, and its rate while
// Projections are rescaled or lose a pod. A user's stream is at most
// UserCreated, EmailVerified, UserDeactivated (orders are one-event
// aggregates of their own), so the load phases bring new users in
// (loadAggregates > seedAggregates): their streams start and go on while
// the partitions change, which the per-aggregate order check needs.
const (
	seedAggregates = "300"
	loadAggregates = "1000"
	seedEvents     = "3000"
	loadRate       = "200"
	concurrency    = "4"
	// A count the generator does not reach before the test stops it.
	endless = "10000000"
)

// Timeouts: pods on a real kubelet take seconds, and a busy 2-core machine
// runs the whole cluster, the database and the load.
const (
	installTimeout = 5 * time.Minute
	readyTimeout   = 3 * time.Minute
	catchUpTimeout = 3 * time.Minute
)

// suite is one run: a namespace, a Helm release in it watching only it, and
// a database.
type suite struct {
	c       client.Client
	ns      string
	release string
	db      *database
	// crdExisted: the CRD was there before the run, which leaves it.
	crdExisted bool
	// monitoringCRDs are the Prometheus operator's CRDs this run created
	// (none on a cluster that has them), which it deletes at the end.
	monitoringCRDs []string
}

// TestProjectionist installs the operator with the Helm chart, runs the
// sample Projections, rescales one under load, deletes a worker pod under
// load, suspends and resumes it, rebuilds it under load, retries a dead
// letter, autoscales it under load, checks a broken
// Projection's condition, and uninstalls the
// operator, asserting every event is applied exactly once throughout. The
// steps build on each other: the first failure ends the run.
func TestProjectionist(t *testing.T) {
	start := time.Now()
	ns := "projectionist-e2e-" + randomSuffix()
	s := &suite{c: newClient(t), ns: ns, release: ns}
	t.Logf("namespace and release %s, image %s (pull policy %s), kubectl %s, helm %s", ns, cfg.image, cfg.pullPolicy, cfg.kubectl, cfg.helm)
	t.Logf("kubectl version:\n%s", kubectl(t, "version"))
	s.db = newDatabase(t, strings.ReplaceAll(ns, "-", "_"))
	t.Logf("projectionist migrate:\n%s", projectionist(t, s.db, "migrate"))
	s.crdExisted = strings.TrimSpace(kubectl(t, "get", "crd", crdName, "--ignore-not-found", "-o", "name")) != ""
	// Cleanup runs in reverse: dump (on failure), then uninstall, delete the
	// namespace and the CRD (if this run made it); the database goes last.
	t.Cleanup(func() { s.tearDown(t) })
	t.Cleanup(func() { s.dumpOnFailure(t) })

	for _, step := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"HelmInstall", s.helmInstall},
		{"Samples", s.samples},
		{"PrinterColumns", s.printerColumns},
		{"ScaleUnderLoad", s.scaleUnderLoad},
		{"DeletePodUnderLoad", s.deletePodUnderLoad},
		{"SuspendResume", s.suspendResume},
		{"RebuildUnderLoad", s.rebuildUnderLoad},
		{"RebuildScopedUnderOtherAppends", s.rebuildScopedUnderOtherAppends},
		{"DeadLetterRetry", s.deadLetterRetry},
		{"AutoscaleUnderLoad", s.autoscaleUnderLoad},
		{"CustomWorkerImage", s.customWorkerImage},
		{"MissingSecret", s.missingSecret},
		{"HelmUninstall", s.helmUninstall},
	} {
		if !t.Run(step.name, step.run) {
			t.FailNow()
		}
	}
	recordTiming(t, "TestProjectionist (install to uninstall)", time.Since(start))
}

// helmInstall creates the namespace (enforcing the restricted Pod Security
// Standard, which the chart's README promises the operator meets), installs
// the chart into it and creates the Secret with the pods' DSN.
func (s *suite) helmInstall(t *testing.T) {
	kubectl(t, "create", "namespace", s.ns)
	kubectl(t, "label", "namespace", s.ns, "pod-security.kubernetes.io/enforce=restricted")

	// The chart installs the CRD (crds.install) unless it exists already:
	// then it belongs to another release, or to no release, and helm would
	// refuse to take it over. Bring it up to date as the chart's README says
	// for crds.install=false.
	crds := map[string]any{"install": !s.crdExisted}
	if s.crdExisted {
		t.Logf("CRD %s exists already: crds.install=false, applying this release's version server-side", crdName)
		kubectl(t, "apply", "--server-side", "--force-conflicts", "-f", filepath.Join(cfg.root, "config", "crd", "bases"))
	}

	// The Prometheus operator's CRDs, unless the cluster has them, so that
	// the chart's monitors and rules are created and validated for real.
	s.installMonitoringCRDs(t)

	values := map[string]any{
		"crds": crds,
		// Monitoring and the operator's PodDisruptionBudget on, as a
		// production install has them; two replicas with leader election.
		"replicaCount": 2,
		"metrics":      map[string]any{"service": map[string]any{"enabled": true}},
		"monitoring": map[string]any{
			"podMonitor":     map[string]any{"enabled": true},
			"serviceMonitor": map[string]any{"enabled": true},
			"prometheusRule": map[string]any{"enabled": true},
			"dashboard":      map[string]any{"enabled": true},
		},
		"podDisruptionBudget": map[string]any{"enabled": true},
		"image":               map[string]any{"repository": cfg.imageRepo, "tag": cfg.imageTag, "pullPolicy": cfg.pullPolicy},
		"workerImage":         map[string]any{"repository": cfg.imageRepo, "tag": cfg.imageTag},
		"watchNamespace":      s.ns,
		// Status (lag, partitions) every 2s instead of 10s: the test waits on it.
		"statusInterval": "2s",
		// A partition index from 4 partitions instead of 16, so that the
		// scale to 4 under load builds one and reads through it.
		"partitionIndexes": map[string]any{"minPartitions": 4},
	}
	b, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("values:\n%s", b)

	begin := time.Now()
	out := helm(t, "install", s.release, filepath.Join(cfg.root, "charts", "projectionist"),
		"--namespace", s.ns, "--values", valuesFile, "--wait", "--timeout", installTimeout.String())
	recordTiming(t, "helm install --wait (operator Deployment available)", time.Since(begin))
	t.Logf("helm install:\n%s", out)

	eventually(t, "the operator Deployment available", time.Minute, func(ctx context.Context) error {
		var d appsv1.Deployment
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.release}, &d); err != nil {
			return err
		}
		if d.Status.AvailableReplicas < 1 {
			return fmt.Errorf("deployment %s: %d available", d.Name, d.Status.AvailableReplicas)
		}
		return nil
	})
	if strings.TrimSpace(kubectl(t, "get", "crd", crdName, "--ignore-not-found", "-o", "name")) == "" {
		t.Fatalf("no CRD %s after helm install", crdName)
	}
	s.checkMonitoring(t)

	secret := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: projectionist-db
  namespace: %s
type: Opaque
stringData:
  dsn: %q
`, s.ns, s.db.podURL)
	kubectlIn(t, []byte(secret), "apply", "-f", "-")
}

// samples applies the user-count and activity-log samples to a log that
// already holds events, and waits for their pods and read models.
func (s *suite) samples(t *testing.T) {
	t.Logf("events generate:\n%s", projectionist(t, s.db, "events", "generate",
		"--count", seedEvents, "--aggregates", seedAggregates, "--concurrency", concurrency, "--progress", "0"))

	for _, sample := range []struct {
		file, name string
		replicas   int32
	}{
		{"projectionist_v1alpha1_projection.yaml", "user-count", 2},
		{"activity-log.yaml", "activity-log", 1},
	} {
		begin := time.Now()
		s.applySample(t, sample.file)
		eventually(t, sample.name+"'s pods Running and Ready", readyTimeout, func(ctx context.Context) error {
			_, err := exactlyPodsReady(ctx, s.c, s.ns, sample.name, int(sample.replicas))
			return err
		})
		recordTiming(t, fmt.Sprintf("kubectl apply %s (%d pods) to pods Ready", sample.name, sample.replicas), time.Since(begin))
		s.waitSettled(t, sample.name, sample.replicas)
		recordTiming(t, fmt.Sprintf("kubectl apply %s to status Ready with lag 0 (%s events)", sample.name, seedEvents), time.Since(begin))
	}

	s.checkUserStats(t)
	eventually(t, "activity_log caught up", catchUpTimeout, s.db.activityLogCaughtUp)
	n := s.db.checkExactlyOnce(t)
	t.Logf("activity_log: %d events, each applied exactly once, in order", n)
}

// checkUserStats waits for user-count's read model to match the log: one
// row per UserCreated, as many inactive as UserDeactivated.
func (s *suite) checkUserStats(t *testing.T) {
	t.Helper()
	var msg string
	eventually(t, "user_stats matching the log", catchUpTimeout, func(ctx context.Context) error {
		var users, created, inactive, deactivated int64
		err := s.db.pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM user_stats),
			(SELECT count(*) FROM events WHERE event_type = 'UserCreated'),
			(SELECT count(*) FROM user_stats WHERE NOT active),
			(SELECT count(*) FROM events WHERE event_type = 'UserDeactivated')`).Scan(&users, &created, &inactive, &deactivated)
		if err != nil {
			return err
		}
		msg = fmt.Sprintf("user_stats: %d users (%d inactive), log: %d UserCreated, %d UserDeactivated", users, inactive, created, deactivated)
		if users != created || inactive != deactivated || created == 0 {
			return fmt.Errorf("%s", msg)
		}
		return nil
	})
	t.Log(msg)
}

// waitSettled waits for a Projection's status to say Ready, n partitions
// and pods, and lag 0, as of the log's current head.
func (s *suite) waitSettled(t *testing.T, name string, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	head, err := s.db.headPosition(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, fmt.Sprintf("%s Ready with %d partitions and lag 0 at head %d", name, n, head), catchUpTimeout, func(ctx context.Context) error {
		return projectionSettled(ctx, s.c, s.ns, name, n, head)
	})
}

// applySample applies a sample Projection of config/samples in the run's
// namespace, with the run's pull policy.
func (s *suite) applySample(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cfg.root, "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(b, &obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	obj["metadata"].(map[string]any)["namespace"] = s.ns
	obj["spec"].(map[string]any)["imagePullPolicy"] = cfg.pullPolicy
	if b, err = yaml.Marshal(obj); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl apply -f config/samples/%s: %s", file,
		strings.TrimSpace(kubectlIn(t, b, "apply", "-f", "-")))
}

// printerColumns checks what `kubectl get projections` shows.
func (s *suite) printerColumns(t *testing.T) {
	rows := getTable(t, "projections", "-n", s.ns)
	t.Logf("kubectl get projections:\n%s", formatTable(rows))
	if want := []string{"NAME", "READY", "STATUS", "PARTITIONS", "LAG", "AGE"}; !slices.Equal(rows[0], want) {
		t.Errorf("kubectl get projections: columns %v, want %v", rows[0], want)
	}
	want := map[string][]string{
		"activity-log": {"activity-log", "True", v1alpha1.ReasonAllReplicasReady, "1", "0"},
		"user-count":   {"user-count", "True", v1alpha1.ReasonAllReplicasReady, "2", "0"},
	}
	for _, r := range rows[1:] {
		w, ok := want[r[0]]
		if !ok {
			continue
		}
		delete(want, r[0])
		if !slices.Equal(r[:5], w) || r[5] == "" {
			t.Errorf("kubectl get projections: row %q, want %q and an age", r, w)
		}
	}
	if len(want) > 0 {
		t.Errorf("kubectl get projections: no rows for %v", want)
	}

	wide := getTable(t, "proj", "-n", s.ns, "-o", "wide")
	t.Logf("kubectl get proj -o wide:\n%s", formatTable(wide))
	if want := []string{"NAME", "READY", "STATUS", "PODS", "PARTITIONS", "LAG", "PROJECTION", "AGE"}; !slices.Equal(wide[0], want) {
		t.Errorf("kubectl get proj -o wide: columns %v, want %v", wide[0], want)
	}
}

func formatTable(rows [][]string) string {
	var b strings.Builder
	for _, r := range rows {
		b.WriteString("  " + strings.Join(r, "\t") + "\n")
	}
	return b.String()
}

// podIdentity is what a restart or a replacement changes.
type podIdentity struct {
	uid      string
	restarts int32
	revision string
}

func identities(pods map[string]corev1.Pod) map[string]podIdentity {
	m := map[string]podIdentity{}
	for name, p := range pods {
		m[name] = podIdentity{string(p.UID), restarts(&p), p.Labels[appsv1.ControllerRevisionHashLabelKey]}
	}
	return m
}

// checkSurvivors fails unless the pods named in before are the same pods,
// not restarted, in now.
func checkSurvivors(t *testing.T, what string, before map[string]podIdentity, now map[string]corev1.Pod) {
	t.Helper()
	for name, b := range before {
		p, ok := now[name]
		switch {
		case !ok:
			t.Errorf("%s: pod %s is gone", what, name)
		case string(p.UID) != b.uid:
			t.Errorf("%s: pod %s was replaced (uid %s, was %s)", what, name, p.UID, b.uid)
		case restarts(&p) != b.restarts:
			t.Errorf("%s: pod %s restarted (%d restarts, was %d)", what, name, restarts(&p), b.restarts)
		case p.Labels[appsv1.ControllerRevisionHashLabelKey] != b.revision:
			t.Errorf("%s: pod %s has revision %s, was %s", what, name, p.Labels[appsv1.ControllerRevisionHashLabelKey], b.revision)
		}
	}
}

// scaleUnderLoad scales activity-log 1 -> 4 -> 2 with kubectl scale while
// events keep arriving: running pods are not restarted, the new partitions
// process, and every event is applied exactly once, in order.
func (s *suite) scaleUnderLoad(t *testing.T) {
	const name = "activity-log"
	gen := startGenerator(t, s.db, "--count", endless, "--aggregates", loadAggregates, "--rate", loadRate, "--concurrency", concurrency)
	waitForEvents(t, s.db, 200, gen.arriving)

	before := s.mustPods(t, name, 1)
	sts := s.mustStatefulSet(t, name)
	revision := sts.Status.UpdateRevision

	after4 := s.scaleKeepingPods(t, "scale 1 -> 4", name, "activity_log", 1, 4, before)
	d := eventually(t, "the partition index for 4 partitions Ready", readyTimeout, func(ctx context.Context) error {
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		if ix := p.Status.PartitionIndex; ix == nil || ix.Name != "events_partitions_4_idx" || ix.Phase != v1alpha1.PartitionIndexReady {
			return fmt.Errorf("status.partitionIndex %+v", ix)
		}
		return nil
	})
	recordTiming(t, "scale 1 -> 4: partition index Ready, under load", d)

	// Let the four partitions work under load for a moment.
	waitForEvents(t, s.db, 500, gen.arriving)

	s.scaleKeepingPods(t, "scale 4 -> 2", name, "activity_log", 4, 2, after4)
	if p, err := getProjection(t.Context(), s.c, s.ns, name); err != nil {
		t.Error(err)
	} else if ix := p.Status.PartitionIndex; ix != nil {
		t.Errorf("at 2 partitions, below the operator's minimum of 4: status.partitionIndex %+v, want none", ix)
	}
	if got := s.mustStatefulSet(t, name).Status.UpdateRevision; got != revision {
		t.Errorf("the StatefulSet's revision changed from %s to %s: scaling rolled the pod template", revision, got)
	}

	// Events were arriving all along: the generator is still running.
	waitForEvents(t, s.db, 200, gen.arriving)
	gen.stop(t)

	begin := time.Now()
	eventually(t, "activity_log caught up after the load", catchUpTimeout, s.db.activityLogCaughtUp)
	s.waitSettled(t, name, 2)
	recordTiming(t, "scale: load stopped to status lag 0", time.Since(begin))

	n := s.db.checkExactlyOnce(t)
	byTotal := s.db.logDistribution(t)
	for _, total := range []int32{1, 4, 2} {
		if byTotal[total] == 0 {
			t.Errorf("no event was applied with %d partitions: the rescale did not happen under load", total)
		}
	}
	across := s.db.aggregatesAcrossGenerations(t)
	if across == 0 {
		t.Errorf("no aggregate had events applied by more than one topology generation: the order check proved nothing about rescaling")
	}
	t.Logf("activity_log: %d events, each applied exactly once and in order, across 1, 4 and 2 partitions; %d aggregates' streams crossed a rescale", n, across)
}

// scale runs `kubectl scale projection NAME --replicas=to` and times the
// milestones: the topology of projection (its spec.projectionName)
// switched in the database, every partition of the new topology processing
// (its checkpoint moved), the pods Ready, the status saying so.
func (s *suite) scale(t *testing.T, name, projection string, from, to int32) {
	t.Helper()
	label := fmt.Sprintf("scale %s %d -> %d", name, from, to)
	begin := time.Now()
	t.Logf("%s: %s", label, strings.TrimSpace(kubectl(t, "scale", "projection", name, "-n", s.ns, fmt.Sprintf("--replicas=%d", to))))

	d := eventually(t, label+": topology switched in the database", readyTimeout, func(ctx context.Context) error {
		tp, err := s.db.topology(ctx, projection)
		if err != nil {
			return err
		}
		if tp.partitions != to {
			return fmt.Errorf("%d partitions", tp.partitions)
		}
		return nil
	})
	recordTiming(t, label+": to topology switched", d)
	eventually(t, label+": every partition processing", readyTimeout, func(ctx context.Context) error {
		_, err := s.db.allProcessing(ctx, projection, to)
		return err
	})
	recordTiming(t, fmt.Sprintf("%s: to all %d partitions' checkpoints moved", label, to), time.Since(begin))
	eventually(t, label+": pods", readyTimeout, func(ctx context.Context) error {
		_, err := exactlyPodsReady(ctx, s.c, s.ns, name, int(to))
		return err
	})
	recordTiming(t, fmt.Sprintf("%s: to exactly %d pods Ready", label, to), time.Since(begin))
	eventually(t, label+": status", readyTimeout, func(ctx context.Context) error {
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		st := p.Status
		if st.Partitions != to || st.ReadyReplicas != to || st.Replicas != to || !meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionReady) {
			return fmt.Errorf("status: partitions %d, replicas %d, readyReplicas %d, %s", st.Partitions, st.Replicas, st.ReadyReplicas,
				conditionString(st.Conditions, v1alpha1.ConditionReady))
		}
		return nil
	})
	recordTiming(t, fmt.Sprintf("%s: to status partitions=readyReplicas=%d and Ready", label, to), time.Since(begin))
}

// scaleKeepingPods scales name (of projection) from -> to, as scale does,
// and checks that the pods of before that stay (those whose ordinal is
// below to) are the same pods, not restarted; it returns the pods after.
func (s *suite) scaleKeepingPods(t *testing.T, what, name, projection string, from, to int32, before map[string]corev1.Pod) map[string]corev1.Pod {
	t.Helper()
	s.scale(t, name, projection, from, to)
	after := s.mustPods(t, name, int(to))
	survivors := identities(before)
	for ordinal := to; ordinal < from; ordinal++ {
		delete(survivors, fmt.Sprintf("%s-%d", name, ordinal))
	}
	checkSurvivors(t, what, survivors, after)
	return after
}

func (s *suite) mustPods(t *testing.T, name string, n int) map[string]corev1.Pod {
	t.Helper()
	var pods map[string]corev1.Pod
	eventually(t, fmt.Sprintf("%d pods of %s Ready", n, name), readyTimeout, func(ctx context.Context) (err error) {
		pods, err = exactlyPodsReady(ctx, s.c, s.ns, name, n)
		return err
	})
	return pods
}

func (s *suite) mustStatefulSet(t *testing.T, name string) *appsv1.StatefulSet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sts, err := statefulSet(ctx, s.c, s.ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return sts
}

// deletePodUnderLoad deletes activity-log-0 while events arrive: the
// StatefulSet replaces it, the other pod carries on, nothing is lost or
// applied twice.
func (s *suite) deletePodUnderLoad(t *testing.T) {
	const name = "activity-log"
	gen := startGenerator(t, s.db, "--count", endless, "--aggregates", loadAggregates, "--rate", loadRate, "--concurrency", concurrency)
	waitForEvents(t, s.db, 400, gen.arriving)

	before := identities(s.mustPods(t, name, 2))
	victim := name + "-0"
	tp := s.db.mustTopology(t, "activity_log")
	// A caught-up partition checkpoints (horizon, 0), so the position alone
	// need not move; the count of events handled does.
	processed := tp.checkpoints[0].processed

	begin := time.Now()
	t.Logf("%s", strings.TrimSpace(kubectl(t, "delete", "pod", victim, "-n", s.ns)))
	recordTiming(t, "kubectl delete pod "+victim+" (graceful termination)", time.Since(begin))
	eventually(t, victim+" replaced and Ready", readyTimeout, func(ctx context.Context) error {
		pods, err := exactlyPodsReady(ctx, s.c, s.ns, name, 2)
		if err != nil {
			return err
		}
		if p := pods[victim]; string(p.UID) == before[victim].uid {
			return fmt.Errorf("pod %s is still the old one", victim)
		}
		return nil
	})
	recordTiming(t, "kubectl delete pod "+victim+" to its replacement Ready", time.Since(begin))
	eventually(t, "partition 0 processing again", readyTimeout, func(ctx context.Context) error {
		tp, err := s.db.topology(ctx, "activity_log")
		if err != nil {
			return err
		}
		if c := tp.checkpoints[0]; c.processed <= processed {
			return fmt.Errorf("partition 0's checkpoint has handled %d events, as many as before the delete", c.processed)
		}
		return nil
	})
	recordTiming(t, "kubectl delete pod "+victim+" to partition 0's checkpoint moving again", time.Since(begin))

	pods := s.mustPods(t, name, 2)
	delete(before, victim)
	checkSurvivors(t, "delete pod "+victim, before, pods)

	waitForEvents(t, s.db, 200, gen.arriving)
	gen.stop(t)
	eventually(t, "activity_log caught up after the load", catchUpTimeout, s.db.activityLogCaughtUp)
	s.waitSettled(t, name, 2)
	n := s.db.checkExactlyOnce(t)
	s.db.logDistribution(t)
	t.Logf("activity_log: %d events, each applied exactly once and in order, across a deleted pod", n)
	s.checkUserStats(t)
}

// missingSecret applies a Projection whose Secret does not exist: it
// reports Degraded with reason SecretNotFound.
func (s *suite) missingSecret(t *testing.T) {
	const name = "no-secret"
	manifest := fmt.Sprintf(`apiVersion: projectionist.dev/v1alpha1
kind: Projection
metadata:
  name: %s
  namespace: %s
spec:
  projectionName: activity_log_missing_secret
  imagePullPolicy: %s
  database:
    secretRef:
      name: no-such-secret
`, name, s.ns, cfg.pullPolicy)
	begin := time.Now()
	kubectlIn(t, []byte(manifest), "apply", "-f", "-")
	eventually(t, name+" Degraded with reason SecretNotFound", readyTimeout, func(ctx context.Context) error {
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionDegraded)
		if c == nil || c.Status != "True" || c.Reason != v1alpha1.ReasonSecretNotFound {
			return fmt.Errorf("%s", conditionString(p.Status.Conditions, v1alpha1.ConditionDegraded))
		}
		if meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady) {
			return fmt.Errorf("Ready while its Secret is missing")
		}
		t.Logf("Degraded: %s", c.Message)
		return nil
	})
	recordTiming(t, "kubectl apply of a Projection without its Secret to Degraded/SecretNotFound", time.Since(begin))
	rows := getTable(t, "projection", name, "-n", s.ns)
	t.Logf("kubectl get projection %s:\n%s", name, formatTable(rows))
	if len(rows) != 2 || len(rows[1]) < 3 || rows[1][1] != "False" || rows[1][2] != v1alpha1.ReasonSecretNotFound {
		t.Errorf("kubectl get projection %s: want READY False and STATUS %s, got %q", name, v1alpha1.ReasonSecretNotFound, rows)
	}
	kubectl(t, "delete", "projection", name, "-n", s.ns, "--wait")
}

// helmUninstall removes the operator: its Deployment, RBAC and Service go;
// the CRD and the Projections stay (as the chart's README says), and so do
// the workers, which carry on without an operator.
func (s *suite) helmUninstall(t *testing.T) {
	begin := time.Now()
	t.Logf("helm uninstall:\n%s", helm(t, "uninstall", s.release, "--namespace", s.ns, "--wait", "--timeout", "3m"))
	eventually(t, "the operator gone", 2*time.Minute, func(ctx context.Context) error {
		if err := gone(ctx, s.c, &appsv1.Deployment{}, client.ObjectKey{Namespace: s.ns, Name: s.release}); err != nil {
			return err
		}
		var pods corev1.PodList
		if err := s.c.List(ctx, &pods, client.InNamespace(s.ns), client.MatchingLabels{"app.kubernetes.io/instance": s.release}); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d operator pods left", len(pods.Items))
		}
		return nil
	})
	recordTiming(t, "helm uninstall to the operator's pods gone", time.Since(begin))

	if left := strings.TrimSpace(helm(t, "list", "--namespace", s.ns, "--all", "--short")); left != "" {
		t.Errorf("helm list after helm uninstall: %s", left)
	}
	selector := "app.kubernetes.io/instance=" + s.release + ",app.kubernetes.io/managed-by=Helm"
	if left := strings.TrimSpace(kubectl(t, "get", "deployments,services,serviceaccounts,roles,rolebindings,configmaps,secrets,"+
		"poddisruptionbudgets,podmonitors,servicemonitors,prometheusrules",
		"-n", s.ns, "-l", selector, "-o", "name")); left != "" {
		t.Errorf("helm uninstall left in the namespace:\n%s", left)
	}
	if left := strings.TrimSpace(kubectl(t, "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name")); left != "" {
		t.Errorf("helm uninstall left cluster-wide:\n%s", left)
	}
	if strings.TrimSpace(kubectl(t, "get", "crd", crdName, "--ignore-not-found", "-o", "name")) == "" {
		t.Errorf("helm uninstall removed the CRD %s; the chart's README says it stays", crdName)
	}
	projections := strings.Fields(kubectl(t, "get", "projections", "-n", s.ns, "-o", "name"))
	slices.Sort(projections)
	if want := []string{"projection.projectionist.dev/activity-log", "projection.projectionist.dev/customer-directory",
		"projection.projectionist.dev/order-ledger", "projection.projectionist.dev/user-count"}; !slices.Equal(projections, want) {
		t.Errorf("after helm uninstall: projections %v, want %v", projections, want)
	}
	// The StatefulSets keep running without an operator to scale them.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := exactlyPodsReady(ctx, s.c, s.ns, "activity-log", 2); err != nil {
		t.Errorf("after helm uninstall, activity-log's workers: %v", err)
	}
}

// tearDown uninstalls the release (if a failure left it), deletes the
// namespace and, if this run installed it, the CRD.
func (s *suite) tearDown(t *testing.T) {
	if t.Failed() && cfg.keepOnFailure {
		t.Logf("E2E_KEEP_ON_FAILURE: keeping namespace %s and release %s (helm uninstall %s -n %s; kubectl delete namespace %s)",
			s.ns, s.release, s.release, s.ns, s.ns)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := run(ctx, nil, cfg.helm, "status", s.release, "--namespace", s.ns); err == nil {
		if _, err := run(ctx, nil, cfg.helm, "uninstall", s.release, "--namespace", s.ns, "--wait", "--timeout", "2m"); err != nil {
			t.Errorf("tear-down: %v", err)
		}
	}
	// The operator is gone, and with it whoever removes the Projections'
	// release finalizer (operations.md, "Upgrading"): remove it here, as
	// a user who uninstalls first must.
	if out, err := run(ctx, nil, cfg.kubectl, "get", "projections", "-n", s.ns, "-o", "name", "--ignore-not-found"); err == nil {
		for _, name := range strings.Fields(out) {
			if _, err := run(ctx, nil, cfg.kubectl, "patch", name, "-n", s.ns, "--type=merge", "-p", `{"metadata":{"finalizers":null}}`); err != nil {
				t.Errorf("tear-down: %v", err)
			}
		}
	}
	begin := time.Now()
	if _, err := run(ctx, nil, cfg.kubectl, "delete", "namespace", s.ns, "--ignore-not-found", "--wait", "--timeout", "3m"); err != nil {
		t.Errorf("tear-down: %v", err)
	} else {
		t.Logf("namespace %s deleted in %s", s.ns, time.Since(begin).Round(10*time.Millisecond))
	}
	if !s.crdExisted {
		if _, err := run(ctx, nil, cfg.kubectl, "delete", "crd", crdName, "--ignore-not-found", "--wait", "--timeout", "1m"); err != nil {
			t.Errorf("tear-down: %v", err)
		}
	}
	for _, crd := range s.monitoringCRDs {
		if _, err := run(ctx, nil, cfg.kubectl, "delete", "crd", crd, "--ignore-not-found", "--wait", "--timeout", "1m"); err != nil {
			t.Errorf("tear-down: %v", err)
		}
	}
}

// dumpOnFailure logs what explains a failure: the namespace's objects,
// `kubectl describe` of Projections and pods, events, every pod's logs
// (and its previous container's), and the projections' rows.
func (s *suite) dumpOnFailure(t *testing.T) {
	if !t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	section := func(title string, args ...string) {
		out, err := run(ctx, nil, cfg.kubectl, args...)
		if err != nil {
			out = err.Error()
		}
		t.Logf("===== %s\n%s", title, out)
	}
	section("objects", "get", "all,projections,secrets,leases", "-n", s.ns, "-o", "wide")
	section("projections (yaml)", "get", "projections", "-n", s.ns, "-o", "yaml")
	section("describe projections", "describe", "projections", "-n", s.ns)
	section("describe pods", "describe", "pods", "-n", s.ns)
	section("events", "get", "events", "-n", s.ns, "--sort-by=.lastTimestamp")
	out, err := run(ctx, nil, cfg.kubectl, "get", "pods", "-n", s.ns, "-o", "name")
	if err == nil {
		for _, pod := range strings.Fields(out) {
			section("logs "+pod, "logs", pod, "-n", s.ns, "--all-containers", "--tail=300", "--timestamps")
			section("previous logs "+pod, "logs", pod, "-n", s.ns, "--all-containers", "--tail=100", "--timestamps", "--previous")
		}
	}
	section("nodes", "describe", "nodes")
	t.Logf("===== database\n%s", s.db.dump())
}

// suspendResume suspends activity-log (spec.suspend): its pods go away, the
// topology stays, events appended meanwhile wait; the resume brings the
// pods back under the same topology generation and they apply those events
// exactly once.
func (s *suite) suspendResume(t *testing.T) {
	const name = "activity-log"
	before := s.db.mustTopology(t, "activity_log")
	begin := time.Now()
	kubectl(t, "patch", "projection", name, "-n", s.ns, "--type", "merge", "-p", `{"spec":{"suspend":true}}`)
	eventually(t, name+" suspended: no pods, Ready False/Suspended", readyTimeout, func(ctx context.Context) error {
		pods, err := workerPods(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		p, err := getProjection(ctx, s.c, s.ns, name)
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		if len(pods) > 0 || c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonSuspended {
			return fmt.Errorf("%d pods, %s", len(pods), conditionString(p.Status.Conditions, v1alpha1.ConditionReady))
		}
		return nil
	})
	recordTiming(t, "suspend: kubectl patch to no pods and Ready False/Suspended", time.Since(begin))
	t.Logf("events generate while suspended:\n%s", projectionist(t, s.db, "events", "generate",
		"--count", "500", "--aggregates", loadAggregates, "--concurrency", concurrency, "--progress", "0"))

	begin = time.Now()
	kubectl(t, "patch", "projection", name, "-n", s.ns, "--type", "merge", "-p", `{"spec":{"suspend":false}}`)
	s.mustPods(t, name, int(before.partitions))
	recordTiming(t, "resume: kubectl patch to the pods Ready", time.Since(begin))
	eventually(t, "activity_log caught up after the resume", catchUpTimeout, s.db.activityLogCaughtUp)
	s.waitSettled(t, name, before.partitions)
	after := s.db.mustTopology(t, "activity_log")
	if after.generation != before.generation || after.partitions != before.partitions {
		t.Errorf("topology after suspend and resume: generation %d, %d partitions; before: %d, %d",
			after.generation, after.partitions, before.generation, before.partitions)
	}
	n := s.db.checkExactlyOnce(t)
	t.Logf("activity_log: %d events, each applied exactly once, across a suspend and resume (topology generation %d throughout)", n, after.generation)
}
