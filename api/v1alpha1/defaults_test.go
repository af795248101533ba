package v1alpha1_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
	"github.com/projectionist/projectionist/pkg/projection"
)

// The CRD's kubebuilder markers must be literals, so this holds the
// defaults and bounds they generate (read from the CRD as generated, the
// schema the API server enforces) to the library's constants.
func TestCRDDefaultsMatchLibrary(t *testing.T) {
	raw, err := os.ReadFile("../../config/crd/bases/projectionist.dev_projections.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema schema `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("CRD has %d versions, want 1", len(crd.Spec.Versions))
	}
	props := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties
	show := func(field string) string {
		p, ok := props[field]
		if !ok {
			return "missing"
		}
		s := "default=" + strconv.Quote(toString(p.Default))
		if p.Minimum != nil {
			s += " min=" + strconv.FormatFloat(*p.Minimum, 'f', -1, 64)
		}
		if p.Maximum != nil {
			s += " max=" + strconv.FormatFloat(*p.Maximum, 'f', -1, 64)
		}
		return s
	}
	got := map[string]string{}
	for _, f := range []string{"batchSize", "pollInterval", "replicas"} {
		got[f] = show(f)
	}
	want := map[string]string{
		"batchSize":    "default=" + strconv.Quote(strconv.Itoa(projection.DefaultBatchSize)) + " min=" + strconv.Itoa(projection.MinBatchSize) + " max=" + strconv.Itoa(projection.MaxBatchSize),
		"pollInterval": "default=" + strconv.Quote(projection.DefaultPollInterval.String()),
		// No minimum: the scale subresource rejects a negative replicas
		// itself, and a minimum made that two errors (TestRejectionsSayItOnce).
		"replicas": "default=" + strconv.Quote(strconv.Itoa(projection.DefaultTotalPartitions)) + " max=" + strconv.Itoa(projection.MaxPartitions),
	}
	if v1alpha1.DefaultReplicas != projection.DefaultTotalPartitions {
		t.Errorf("v1alpha1.DefaultReplicas is %d, want the library's DefaultTotalPartitions %d", v1alpha1.DefaultReplicas, projection.DefaultTotalPartitions)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CRD defaults differ from the library's constants (-library +CRD):\n%s", diff)
	}
	// The Secret's key, which the operator falls back to for a Projection
	// that skipped defaulting.
	key := props["database"].Properties["secretRef"].Properties["key"].Default
	if key != resources.DefaultSecretKey {
		t.Errorf("database.secretRef.key default %v, want %q (resources.DefaultSecretKey)", key, resources.DefaultSecretKey)
	}
	// The CRD's pollInterval default must parse to the same duration.
	if d, err := time.ParseDuration(toString(props["pollInterval"].Default)); err != nil || d != projection.DefaultPollInterval {
		t.Errorf("pollInterval default parses to %s (%v), want %s", d, err, projection.DefaultPollInterval)
	}
}

// schema is the part of an OpenAPI schema the test reads.
type schema struct {
	Default    any               `json:"default"`
	Minimum    *float64          `json:"minimum"`
	Maximum    *float64          `json:"maximum"`
	Properties map[string]schema `json:"properties"`
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case nil:
		return ""
	}
	return "?"
}
