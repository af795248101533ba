package controllers

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
)

// ManagerOptions configure the operator process.
type ManagerOptions struct {
	// WorkerImage is the worker image of Projections without spec.image.
	WorkerImage string
	// WatchNamespace limits the operator to one namespace; empty watches
	// all.
	WatchNamespace string
	// LeaderElect runs a leader election, so that only one of several
	// operator replicas reconciles at a time.
	LeaderElect bool
	// LeaderElectionNamespace holds the election's Lease; defaults to the
	// namespace the operator runs in.
	LeaderElectionNamespace string
	// MetricsAddr serves /metrics ("0" disables). Defaults to ":8080".
	MetricsAddr string
	// MetricsSecure serves /metrics over HTTPS, and only to a client whose
	// bearer token the API server authenticates (a TokenReview) and
	// authorizes for get on the non-resource URL /metrics (a
	// SubjectAccessReview); the operator needs create on both review types
	// (config/rbac/metrics_auth_role.yaml). Defaults to false: plain HTTP,
	// open to whoever reaches the port (the projectionist binary's
	// --metrics-secure defaults to true).
	MetricsSecure bool
	// MetricsCertDir holds tls.crt and tls.key, the HTTPS metrics server's
	// certificate and key, reloaded when they change. Defaults to empty: a
	// self-signed certificate generated at start. Only with MetricsSecure.
	MetricsCertDir string
	// ProbeAddr serves /healthz and /readyz. Defaults to ":8081".
	ProbeAddr string
	// StatusInterval is how often status is refreshed from the database.
	// Defaults to DefaultStatusInterval.
	StatusInterval time.Duration
	// Logger receives the operator's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// MaxConcurrentReconciles is how many Projections are reconciled at
	// once. Defaults to DefaultMaxConcurrentReconciles.
	MaxConcurrentReconciles int
	// PartitionIndexMinPartitions is the smallest partition count for
	// which the operator builds a partition index; 0 builds none (the
	// projectionist binary's --partition-index-min-partitions defaults to
	// DefaultPartitionIndexMinPartitions).
	PartitionIndexMinPartitions int
	// PartitionIndexRetention is how long a partition index that no
	// projection in its database uses is kept before the operator drops
	// it. Defaults to DefaultPartitionIndexRetention.
	PartitionIndexRetention time.Duration
	// ReleaseTimeout is how long a deleted Projection waits for its
	// database to release its projection name before it goes anyway.
	// Defaults to DefaultReleaseTimeout.
	ReleaseTimeout time.Duration
	// SlowReadGrace is how long a Projection's database reads may keep
	// running out of time, while the database answers a ping, before it is
	// Degraded (DatabaseSlow). Defaults to DefaultSlowReadGrace.
	SlowReadGrace time.Duration
}

// DefaultMaxConcurrentReconciles lets a reconcile waiting on the API
// server or the database not hold up the others.
const DefaultMaxConcurrentReconciles = 4

// Scheme returns a scheme with the built-in types and the Projection API.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// NewManager builds the operator's controller-runtime manager with the
// ProjectionReconciler registered.
func NewManager(cfg *rest.Config, opts ManagerOptions) (ctrl.Manager, error) {
	if opts.WorkerImage == "" {
		return nil, fmt.Errorf("the worker image is empty: set --worker-image")
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = ":8080"
	}
	if opts.ProbeAddr == "" {
		opts.ProbeAddr = ":8081"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = DefaultMaxConcurrentReconciles
	}
	metrics, err := metricsOptions(opts)
	if err != nil {
		return nil, err
	}
	log := logr.FromSlogHandler(opts.Logger.Handler())
	ctrl.SetLogger(log)
	mo := ctrl.Options{
		Scheme:                  Scheme(),
		Logger:                  log,
		Metrics:                 metrics,
		HealthProbeBindAddress:  opts.ProbeAddr,
		LeaderElection:          opts.LeaderElect,
		LeaderElectionID:        "projectionist-operator.projectionist.dev",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		// Stepping down releases the lease at once, so a new leader takes
		// over without waiting for it to expire.
		LeaderElectionReleaseOnCancel: true,
		Controller:                    config.Controller{MaxConcurrentReconciles: opts.MaxConcurrentReconciles},
	}
	// The informers hold only what the operator needs: Pods, StatefulSets
	// and Services that carry the projection label (its children and
	// their pods), not every one in the cluster; of Secrets, only metadata
	// (see SetupWithManager).
	hasProjection, err := labels.NewRequirement(resources.LabelProjection, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	children := cache.ByObject{Label: labels.NewSelector().Add(*hasProjection)}
	mo.Cache.ByObject = map[client.Object]cache.ByObject{
		&corev1.Pod{}: children, &appsv1.StatefulSet{}: children, &corev1.Service{}: children,
	}
	if opts.WatchNamespace != "" {
		mo.Cache.DefaultNamespaces = map[string]cache.Config{opts.WatchNamespace: {}}
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	r := &ProjectionReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Recorder:       mgr.GetEventRecorder("projectionist-operator"),
		Options:        resources.Options{WorkerImage: opts.WorkerImage},
		StatusInterval: opts.StatusInterval,

		PartitionIndexMinPartitions: opts.PartitionIndexMinPartitions,
		PartitionIndexRetention:     opts.PartitionIndexRetention,
		ReleaseTimeout:              opts.ReleaseTimeout,
		SlowReadGrace:               opts.SlowReadGrace,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Projection controller: %w", err)
	}
	projectionMetrics.setReader(mgr.GetCache())
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// Ready once the informers have synced: before that the operator has
	// not seen the Projections it is about to reconcile.
	if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informers not synced yet")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return mgr, nil
}

// metricsOptions configures the metrics server as kubebuilder v4 projects
// do: with MetricsSecure, HTTPS (HTTP/2 off) and every request's token
// authenticated and authorized by the API server.
func metricsOptions(opts ManagerOptions) (metricsserver.Options, error) {
	mo := metricsserver.Options{BindAddress: opts.MetricsAddr}
	if !opts.MetricsSecure {
		if opts.MetricsCertDir != "" {
			return mo, fmt.Errorf("a metrics certificate directory (%s) needs secure metrics: set --metrics-secure", opts.MetricsCertDir)
		}
		return mo, nil
	}
	mo.SecureServing = true
	mo.FilterProvider = filters.WithAuthenticationAndAuthorization
	// HTTP/2's rapid reset and stream cancellation attacks
	// (CVE-2023-44487, CVE-2023-39325) need no credentials: serve HTTP/1.1
	// only, as kubebuilder's scaffold does by default.
	mo.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	if opts.MetricsCertDir != "" {
		// controller-runtime falls back to a self-signed certificate when
		// the files are missing: a mistyped directory would go unnoticed.
		for _, name := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(opts.MetricsCertDir, name)); err != nil {
				return mo, fmt.Errorf("metrics certificate directory: %w", err)
			}
		}
		mo.CertDir = opts.MetricsCertDir
	}
	return mo, nil
}

// RunManager runs the operator until ctx ends.
func RunManager(ctx context.Context, cfg *rest.Config, opts ManagerOptions) error {
	mgr, err := NewManager(cfg, opts)
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}
