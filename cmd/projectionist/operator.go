package main

import (
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/projectionist/projectionist/controllers"
	"github.com/projectionist/projectionist/internal/dbconn"
	"github.com/projectionist/projectionist/pkg/projection"
)

// defaultWorkerImage is the worker image of Projections without
// spec.image: this binary's own release.
func defaultWorkerImage() string { return "docker.io/projectionist/projectionist:" + version }

func (c *cli) operator(args []string) int {
	f := newFlags(commandHelp{
		name: "operator", args: "[flags]",
		description: `
Runs the Kubernetes operator: it reconciles Projection resources
(projectionist.dev/v1alpha1) into StatefulSets of worker pods, one pod per
partition, switches a projection's partition count in its database before
adding or removing pods, and reports progress and lag in each
Projection's status. It connects to the API server in-cluster, or with
--kubeconfig / $KUBECONFIG / ~/.kube/config outside.`,
		examples: `  projectionist operator --leader-elect --worker-image docker.io/projectionist/projectionist:v0.1.0
  projectionist operator --kubeconfig ~/.kube/config --watch-namespace demo --metrics-addr 0`,
	})
	kubeconfig := f.String("kubeconfig", "", "kubeconfig file (default: in-cluster, else $KUBECONFIG, else ~/.kube/config)")
	image := f.String("worker-image", envOr(c.getenv, "WORKER_IMAGE", defaultWorkerImage()), "worker image of Projections without spec.image ($WORKER_IMAGE)")
	namespace := f.String("watch-namespace", c.getenv("WATCH_NAMESPACE"), "only reconcile Projections in this namespace ($WATCH_NAMESPACE; default: all)")
	leaderElect := f.Bool("leader-elect", false, "elect a leader, so that one of several operator replicas reconciles at a time")
	leaderNamespace := f.String("leader-election-namespace", "", "namespace of the leader election's Lease (default: the operator's own)")
	metricsAddr := f.String("metrics-addr", ":8080", `address of /metrics, or "0" to disable`)
	metricsSecure := f.Bool("metrics-secure", true, "serve /metrics over HTTPS, only to bearer tokens the API server authenticates and authorizes for get on /metrics (false: plain HTTP, open to all)")
	metricsCertDir := f.String("metrics-cert-dir", "", "directory holding tls.crt and tls.key for the HTTPS /metrics, reloaded on change (default: a self-signed certificate)")
	probeAddr := f.String("health-probe-addr", ":8081", "address of /healthz and /readyz")
	interval := f.Duration("status-interval", controllers.DefaultStatusInterval, "how often a Projection's status is refreshed from its database")
	maxReconciles := f.Int("max-concurrent-reconciles", controllers.DefaultMaxConcurrentReconciles, "how many Projections are reconciled at once")
	indexMin := f.Int("partition-index-min-partitions", controllers.DefaultPartitionIndexMinPartitions,
		"build a partition index (one index range of its own rows for each partition to read) for every partition count of at least this; 0: none")
	indexRetention := f.Duration("partition-index-retention", controllers.DefaultPartitionIndexRetention,
		"how long a partition index no projection in its database uses is kept before the operator drops it")
	logLevel := f.String("log-level", "info", "debug, info, warn or error")
	if done, code := c.parse(f, args); done {
		return code
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return c.fail("operator", usagef("--log-level %q: must be debug, info, warn or error", *logLevel))
	}
	if *interval < time.Second {
		return c.fail("operator", usagef("--status-interval %s: must be at least 1s", *interval))
	}
	if *image == "" {
		return c.fail("operator", usagef("--worker-image is empty"))
	}
	if *metricsCertDir != "" && !*metricsSecure {
		return c.fail("operator", usagef("--metrics-cert-dir needs --metrics-secure"))
	}
	if *maxReconciles < 1 {
		return c.fail("operator", usagef("--max-concurrent-reconciles %d: must be at least 1", *maxReconciles))
	}
	if *indexMin != 0 && *indexMin < projection.MinPartitionIndexPartitions {
		return c.fail("operator", usagef("--partition-index-min-partitions %d: must be 0 (none) or at least %d", *indexMin, projection.MinPartitionIndexPartitions))
	}
	if *indexRetention < time.Minute {
		return c.fail("operator", usagef("--partition-index-retention %s: must be at least 1m", *indexRetention))
	}
	logger := slog.New(slog.NewJSONHandler(c.stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: new(dbconn.Redactor).ReplaceAttr}))

	cfg, err := kubeConfig(*kubeconfig)
	if err != nil {
		return c.fail("operator", fmt.Errorf("loading the Kubernetes client configuration: %w", err))
	}
	logger.Info("operator starting", "version", version, "workerImage", *image, "watchNamespace", *namespace, "leaderElect", *leaderElect, "metricsSecure", *metricsSecure)
	err = controllers.RunManager(c.ctx, cfg, controllers.ManagerOptions{
		WorkerImage:             *image,
		WatchNamespace:          *namespace,
		LeaderElect:             *leaderElect,
		LeaderElectionNamespace: *leaderNamespace,
		MetricsAddr:             *metricsAddr,
		MetricsSecure:           *metricsSecure,
		MetricsCertDir:          *metricsCertDir,
		ProbeAddr:               *probeAddr,
		StatusInterval:          *interval,
		Logger:                  logger,
		MaxConcurrentReconciles: *maxReconciles,

		PartitionIndexMinPartitions: *indexMin,
		PartitionIndexRetention:     *indexRetention,
	})
	if err != nil {
		return c.fail("operator", err)
	}
	logger.Info("operator stopped")
	return exitOK
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		return ctrl.GetConfig()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	// As ctrl.GetConfig does: no client-side rate limit, the API server's
	// priority and fairness is the limit. client-go's default (5 requests/s
	// per resource type) caps reconciles at 5/s, fewer than 1000
	// Projections' status refreshes need.
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
