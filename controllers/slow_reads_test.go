package controllers_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
)

// standInFailingWorker creates a pod that the Projection's selector finds,
// whose worker container has exited with logLine (as a worker with an
// unknown projection name does); no StatefulSet adopts it and no node
// runs it.
func standInFailingWorker(t *testing.T, ns string, p *v1alpha1.Projection, logLine string) {
	t.Helper()
	ctx := t.Context()
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.Name + "-owner"}}
	if err := k8sClient.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.Name + "-worker-standin", Labels: resources.Labels(p),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"nowhere": "true"},
			Containers:   []corev1.Container{{Name: "worker", Image: "example.invalid/w:1"}},
		},
	}
	if err := k8sClient.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// The scheduler writes the pod's status too: retry on conflicts.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: "worker", Image: "example.invalid/w:1", ImageID: "example.invalid/w@sha256:0", RestartCount: 3,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 2, Reason: "Error", Message: logLine}},
		}}
		return k8sClient.Status().Update(ctx, pod)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// slowReadLogs counts the operator's "database reads slow" log lines of
// Projection name in ns whose slow-read grace had passed.
func slowReadLogs(t *testing.T, ns, name string) int {
	t.Helper()
	n := 0
	for line := range strings.Lines(operatorLog.String()) {
		var l struct {
			Namespace, Name, Msg string
			GraceOver            bool
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("operator log line is not JSON: %v: %q", err, line)
		}
		if l.Namespace == ns && l.Name == name && l.Msg == "database reads slow" && l.GraceOver {
			n++
		}
	}
	return n
}

// Issue 32 point 3: progress reads that run out of time on a database that
// answers (here a lock on the checkpoints held in another transaction) are
// slow reads, not an unreachable database. The first ones show Degraded
// False with reason DatabaseSlow and keep the last reading in the status;
// Degraded turns True (DatabaseSlow) only once they have lasted the
// operator's slow-read grace (10s in this suite). A Projection whose
// worker fails on an unknown projection name keeps reporting that
// (WorkerFailing) throughout, also past the grace. Once the lock goes,
// both recover by themselves.
func TestSlowProgressReadIsNotAnOutage(t *testing.T) {
	ctx := t.Context()
	ns := newNamespace(t)
	db := newMigratedDatabase(t, ns)
	newProjectionWithTopology(t, ns, db, "slow", "slow_one", 1)
	typo := newProjectionWithTopology(t, ns, db, "typo", "user_cuont", 1)
	standInFailingWorker(t, ns, typo, `{"level":"ERROR","msg":"invalid worker configuration","error":"invalid worker config: unknown projection \"user_cuont\"; this worker has user_count"}`)

	// typoFails checks that typo reports its worker's failure.
	typoFails := func() error {
		got := condition(getProjection(t, ns, "typo"), v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonWorkerFailing+":") || !strings.Contains(got, `unknown projection \"user_cuont\"`) {
			return fmt.Errorf("typo's Degraded is %q", got)
		}
		return nil
	}
	var before v1alpha1.ProjectionStatus
	eventually(t, 60*time.Second, "slow Ready and typo Degraded WorkerFailing", func() error {
		p := getProjection(t, ns, "slow")
		if got := condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(got, "True/") || p.Status.Partitions != 1 {
			return fmt.Errorf("slow's Ready is %q, %d partitions", got, p.Status.Partitions)
		}
		before = p.Status
		return typoFails()
	})

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE projection_checkpoints IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	// watch fails the test on any sign of an outage reported before the
	// grace, or of typo's worker failure hidden.
	watch := func(allowSlowDegraded bool) func() error {
		return func() error {
			if err := typoFails(); err != nil {
				t.Fatal(err)
			}
			p := getProjection(t, ns, "slow")
			got := condition(p, v1alpha1.ConditionDegraded)
			slowDegraded := strings.HasPrefix(got, "True/"+v1alpha1.ReasonDatabaseSlow+":")
			if strings.HasPrefix(got, "True/") && (!allowSlowDegraded || !slowDegraded) {
				t.Fatalf("slow's Degraded is %q during its first slow reads", got)
			}
			if p.Status.Partitions != before.Partitions || p.Status.TopologyGeneration != before.TopologyGeneration {
				t.Fatalf("slow's status lost its last reading: %d partitions, topology generation %d; want %d, %d",
					p.Status.Partitions, p.Status.TopologyGeneration, before.Partitions, before.TopologyGeneration)
			}
			return nil
		}
	}
	eventually(t, 60*time.Second, "slow Degraded False DatabaseSlow", func() error {
		if err := watch(false)(); err != nil {
			return err
		}
		got := condition(getProjection(t, ns, "slow"), v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(got, "False/"+v1alpha1.ReasonDatabaseSlow+": reading progress: no result within 5s, while the database answers a ping") {
			return fmt.Errorf("slow's Degraded is %q", got)
		}
		if r := condition(getProjection(t, ns, "slow"), v1alpha1.ConditionReady); !strings.HasPrefix(r, "True/") {
			t.Fatalf("slow's Ready is %q during its first slow reads", r)
		}
		return nil
	})
	eventually(t, 60*time.Second, "slow Degraded True DatabaseSlow once the reads have been slow for the grace", func() error {
		if err := watch(true)(); err != nil {
			return err
		}
		got := condition(getProjection(t, ns, "slow"), v1alpha1.ConditionDegraded)
		if !strings.HasPrefix(got, "True/"+v1alpha1.ReasonDatabaseSlow+": reading progress: ") || !strings.Contains(got, "reads slow since") {
			return fmt.Errorf("slow's Degraded is %q", got)
		}
		return nil
	})
	// typo's reads are past the grace too (its second such pass: the
	// first one's status is written): it still says WorkerFailing.
	eventually(t, 60*time.Second, "typo's reads slow past the grace", func() error {
		if n := slowReadLogs(t, ns, "typo"); n < 2 {
			return fmt.Errorf("%d passes past the grace", n)
		}
		return nil
	})
	if err := typoFails(); err != nil {
		t.Fatal(err)
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "slow recovered", func() error {
		p := getProjection(t, ns, "slow")
		if d, r := condition(p, v1alpha1.ConditionDegraded), condition(p, v1alpha1.ConditionReady); !strings.HasPrefix(d, "False/"+v1alpha1.ReasonReconciled) ||
			!strings.HasPrefix(r, "True/") {
			return fmt.Errorf("Degraded %q, Ready %q", d, r)
		}
		return nil
	})
	if err := typoFails(); err != nil {
		t.Fatal(err)
	}
}
