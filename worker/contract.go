package worker

// The operator-to-worker contract (DESIGN rule 9): how the operator starts
// a worker container. The StatefulSet builder (controllers/resources) and
// [ParseConfig] both use these names, so the stock projectionist image and
// any program around [Main] or [Program.Main] run alike under the operator.
//
// The operator runs the image's own entrypoint (it never sets the
// container's command, since it cannot know where a user's image keeps its
// binary) with the arguments [Args], and configures it only through the
// environment variables below. The stock binary reads the first argument as
// its subcommand; every other worker program accepts it and ignores it.
const (
	// Subcommand is the one argument the operator passes: the stock
	// binary's subcommand, which [ParseConfig] skips when it comes first.
	Subcommand = "worker"

	// The environment variables the operator sets.
	EnvDatabaseURL  = "DATABASE_URL"  // from the Projection's Secret
	EnvProjection   = "PROJECTION"    // spec.projectionName
	EnvBatchSize    = "BATCH_SIZE"    // spec.batchSize
	EnvPollInterval = "POLL_INTERVAL" // spec.pollInterval
	EnvErrorPolicy  = "ERROR_POLICY"  // spec.errorPolicy, as [projection.ErrorPolicy.String] spells it
	EnvPartitionKey = "PARTITION_KEY" // the pod's ordinal, from its apps.kubernetes.io/pod-index label
	EnvPodName      = "POD_NAME"      // the pod's name, whose ordinal suffix is the fallback partition key
	EnvHTTPAddr     = "HTTP_ADDR"     // ":" + [Port]
	EnvLogFormat    = "LOG_FORMAT"    // json

	// EnvTotalPartitions is never set by the operator: its workers follow
	// the partition count it records in the database (DESIGN rule 5).
	EnvTotalPartitions = "TOTAL_PARTITIONS"

	// Port is the port of the worker's HTTP server under the operator.
	Port = 8080

	// The HTTP paths of the worker's probes and metrics.
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
)

// Args are the container arguments the operator starts a worker image with.
func Args() []string { return []string{Subcommand} }
