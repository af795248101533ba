//go:build e2e

package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/projectionist/projectionist/controllers/resources"
)

// The custom worker's mount of the database's CA, as its README shows.
const (
	caMountPath = "/etc/db-ca"
	caFile      = caMountPath + "/ca.crt"
)

// customWorkerImage runs examples/custom-worker, a user's own worker.Main
// program in an image built without Docker, under the operator: two
// Projections naming its two projections, one with an image pull Secret and
// the database's CA mounted from a ConfigMap (sslmode=verify-full where the
// suite knows the CA). Its read models must match the log exactly after a
// rescale 1 -> 3 -> 2 and a deleted pod, both under load, with no restart
// of a surviving pod.
func (s *suite) customWorkerImage(t *testing.T) {
	const ledger, directory = "order-ledger", "customer-directory"
	dsn := s.db.podURL
	if cfg.databaseCA != nil {
		var err error
		if dsn, err = withVerifyFull(dsn, caFile); err != nil {
			t.Fatalf("E2E_POD_DATABASE_URL: %v", err)
		}
	} else {
		t.Logf("E2E_DATABASE_CA is not set: the CA ConfigMap is mounted, but the pods connect with E2E_POD_DATABASE_URL's sslmode")
	}
	ca := string(cfg.databaseCA)
	if ca == "" {
		ca = "no CA given\n"
	}
	// The pull Secret is never used (the node holds the image and the pull
	// policy is IfNotPresent); the test checks that the pods carry it.
	dockerConfig, err := json.Marshal(map[string]any{"auths": map[string]any{
		"registry.example.com": map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("e2e:not-a-secret"))},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// customProjection is a Projection of one of the custom worker's
	// projections, pulled with the registry Secret and mounting the
	// database's CA; more is the rest of its spec.
	customProjection := func(name, projectionName, more string) string {
		return fmt.Sprintf(`apiVersion: projectionist.dev/v1alpha1
kind: Projection
metadata: {name: %s, namespace: %s}
spec:
  projectionName: %s
  image: %s
  imagePullPolicy: %s
  imagePullSecrets: [{name: registry-credentials}]
  replicas: 1
  database:
    secretRef: {name: shop-db}
  volumes:
  - name: db-ca
    configMap: {name: db-ca}
  volumeMounts:
  - {name: db-ca, mountPath: %s, readOnly: true}
%s`, name, s.ns, projectionName, cfg.customImage, cfg.pullPolicy, caMountPath, more)
	}
	objects := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: registry-credentials, namespace: %[1]s}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: %[2]q
---
apiVersion: v1
kind: ConfigMap
metadata: {name: db-ca, namespace: %[1]s}
data:
  ca.crt: %[3]q
---
apiVersion: v1
kind: Secret
metadata: {name: shop-db, namespace: %[1]s}
type: Opaque
stringData:
  dsn: %[4]q
---
`, s.ns, dockerConfig, ca, dsn) + customProjection(ledger, "order_ledger", `  pollInterval: 50ms
  podLabels: {team: shop}
  podAnnotations: {prometheus.io/scrape: "true", prometheus.io/port: "8080"}
`) + "---\n" + customProjection(directory, "customer_directory", "")
	begin := time.Now()
	t.Logf("kubectl apply (custom worker %s): %s", cfg.customImage, strings.TrimSpace(kubectlIn(t, []byte(objects), "apply", "-f", "-")))
	for _, name := range []string{ledger, directory} {
		s.mustPods(t, name, 1)
		s.waitSettled(t, name, 1)
	}
	recordTiming(t, "kubectl apply of the custom worker's two Projections to both Ready with lag 0", time.Since(begin))
	s.checkCustomReadModels(t)

	pods := s.mustPods(t, ledger, 1)
	pod := pods[ledger+"-0"]
	checkCustomPod(t, &pod)
	if cfg.databaseCA != nil {
		// The pods verified the server against the mounted CA.
		n := s.db.mustInt(t, `SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
			WHERE ssl AND application_name = 'projectionist-worker' AND datname = current_database()`)
		if n == 0 {
			t.Errorf("no TLS connection of a worker to the database: sslmode=verify-full did not take effect")
		}
		t.Logf("worker connections over TLS (verify-full, CA from the ConfigMap): %d", n)
	}

	gen := startGenerator(t, s.db, "--count", endless, "--aggregates", loadAggregates, "--rate", loadRate, "--concurrency", concurrency)
	waitForEvents(t, s.db, 200, gen.arriving)
	after3 := s.scaleKeepingPods(t, "custom worker scale 1 -> 3", ledger, "order_ledger", 1, 3, pods)
	waitForEvents(t, s.db, 300, gen.arriving)

	after2 := s.scaleKeepingPods(t, "custom worker scale 3 -> 2", ledger, "order_ledger", 3, 2, after3)

	victim := ledger + "-1"
	t.Logf("%s", strings.TrimSpace(kubectl(t, "delete", "pod", victim, "-n", s.ns)))
	eventually(t, victim+" replaced and Ready", readyTimeout, func(ctx context.Context) error {
		pods, err := exactlyPodsReady(ctx, s.c, s.ns, ledger, 2)
		if err != nil {
			return err
		}
		if pods[victim].UID == after2[victim].UID {
			return fmt.Errorf("pod %s is still the old one", victim)
		}
		return nil
	})
	survivors := identities(after2)
	delete(survivors, victim)
	checkSurvivors(t, "custom worker delete pod "+victim, survivors, s.mustPods(t, ledger, 2))

	waitForEvents(t, s.db, 200, gen.arriving)
	gen.stop(t)
	s.waitSettled(t, ledger, 2)
	s.waitSettled(t, directory, 1)
	// scale checked that every partition of 3, then of 2, handled events
	// while the generator ran.
	s.checkCustomReadModels(t)
	recordTiming(t, "custom worker image: apply, scale 1 -> 3 -> 2 and a deleted pod under load, to exact read models", time.Since(begin))
}

// checkCustomPod checks that a custom worker pod runs the user's image with
// the pod settings of its Projection.
func checkCustomPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	spec := pod.Spec
	if c := spec.Containers[0]; c.Image != cfg.customImage || !slices.Equal(c.Args, []string{"worker"}) || len(c.Command) != 0 {
		t.Errorf("container: image %s, command %q, args %q; want %s, the image's entrypoint, [worker]", c.Image, c.Command, c.Args, cfg.customImage)
	}
	if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "registry-credentials" {
		t.Errorf("imagePullSecrets = %v, want [registry-credentials]", spec.ImagePullSecrets)
	}
	if !slices.ContainsFunc(spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "db-ca" && m.MountPath == caMountPath && m.ReadOnly
	}) {
		t.Errorf("volumeMounts = %v, want db-ca read-only at %s", spec.Containers[0].VolumeMounts, caMountPath)
	}
	if pod.Labels["team"] != "shop" || pod.Labels[resources.LabelProjection] != "order-ledger" {
		t.Errorf("pod labels = %v, want team=shop beside the operator's", pod.Labels)
	}
	if pod.Annotations["prometheus.io/scrape"] != "true" {
		t.Errorf("pod annotations = %v, want prometheus.io/scrape=true", pod.Annotations)
	}
}

// checkCustomReadModels waits until the custom worker's read models match
// the log: order_ledger one row per OrderPlaced with the same amounts (its
// primary key is the event id), customer_directory one row per UserCreated
// with the verified and inactive counts of the log and, in events, each
// User event counted once.
func (s *suite) checkCustomReadModels(t *testing.T) {
	t.Helper()
	var msg string
	eventually(t, "the custom worker's read models matching the log", catchUpTimeout, func(ctx context.Context) error {
		var orders, placed, cents, placedCents, users, created, verified, verifiedLog, inactive, deactivated, userEvents, applied int64
		err := s.db.pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM order_ledger),
			(SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'),
			(SELECT coalesce(sum(amount_cents), 0) FROM order_ledger),
			(SELECT coalesce(sum((payload->>'amount_cents')::bigint), 0) FROM events WHERE event_type = 'OrderPlaced'),
			(SELECT count(*) FROM customer_directory),
			(SELECT count(*) FROM events WHERE event_type = 'UserCreated'),
			(SELECT count(*) FROM customer_directory WHERE verified),
			(SELECT count(*) FROM events WHERE event_type = 'EmailVerified'),
			(SELECT count(*) FROM customer_directory WHERE NOT active),
			(SELECT count(*) FROM events WHERE event_type = 'UserDeactivated'),
			(SELECT count(*) FROM events WHERE aggregate_type = 'User'),
			(SELECT coalesce(sum(events), 0) FROM customer_directory)`).
			Scan(&orders, &placed, &cents, &placedCents, &users, &created, &verified, &verifiedLog, &inactive, &deactivated, &userEvents, &applied)
		if err != nil {
			return err
		}
		msg = fmt.Sprintf("order_ledger %d rows, %d cents (log: %d OrderPlaced, %d cents); customer_directory %d users, %d verified, %d inactive, %d events applied (log: %d UserCreated, %d EmailVerified, %d UserDeactivated, %d User events)",
			orders, cents, placed, placedCents, users, verified, inactive, applied, created, verifiedLog, deactivated, userEvents)
		if orders != placed || cents != placedCents || users != created || verified != verifiedLog || inactive != deactivated || applied != userEvents || placed == 0 || created == 0 {
			return fmt.Errorf("%s", msg)
		}
		return nil
	})
	t.Log(msg)
}

// withVerifyFull is a URL dsn with sslmode=verify-full and sslrootcert.
func withVerifyFull(dsn, rootCert string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("not a postgres:// URL")
	}
	q := u.Query()
	q.Set("sslmode", "verify-full")
	q.Set("sslrootcert", rootCert)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
