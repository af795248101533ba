package resources

import (
	"testing"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/worker"
)

// The error policy is spelled three ways: the CRD's enum (v1alpha1), the
// worker's ERROR_POLICY value and the library's constant. Each spec value
// reaches a worker as the library's policy of the same meaning, through
// the StatefulSet's environment and worker.ParseConfig.
func TestErrorPolicyReachesTheWorker(t *testing.T) {
	for spec, want := range map[v1alpha1.ErrorPolicy]projection.ErrorPolicy{
		"":                             projection.ErrorPolicyStop, // not defaulted by the API server
		v1alpha1.ErrorPolicyStop:       projection.ErrorPolicyStop,
		v1alpha1.ErrorPolicySkip:       projection.ErrorPolicySkip,
		v1alpha1.ErrorPolicyDeadLetter: projection.ErrorPolicyDeadLetter,
	} {
		sts, err := StatefulSet(with(minimal(), func(p *v1alpha1.Projection) { p.Spec.ErrorPolicy = spec }), 1, Options{WorkerImage: defaultImage})
		if err != nil {
			t.Fatalf("errorPolicy %q: StatefulSet: %v", spec, err)
		}
		env := map[string]string{}
		for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
			if e.Value != nil {
				env[*e.Name] = *e.Value
			}
		}
		cfg, err := worker.ParseConfig(nil, func(name string) string { return env[name] })
		if err != nil || cfg.ErrorPolicy != want {
			t.Errorf("errorPolicy %q: ERROR_POLICY=%q parses to %v (%v), want %v", spec, env[worker.EnvErrorPolicy], cfg.ErrorPolicy, err, want)
		}
	}
}
