package kubetest

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// RequestCounts reads the API server's count of requests served so far
// (apiserver_request_total), summed by verb and resource: keys such as
// "APPLY statefulsets" or "GET " (non-resource paths). The GET that reads
// the metrics counts too.
func RequestCounts(ctx context.Context, cfg *rest.Config) (map[string]float64, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	body, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	counts := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		labels, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		counts[label(labels, "verb")+" "+label(labels, "resource")] += n
	}
	return counts, nil
}

// label is the value of name in a metric line's label set (after "{").
func label(labels, name string) string {
	for {
		k, rest, ok := strings.Cut(labels, `="`)
		if !ok {
			return ""
		}
		v, after, _ := strings.Cut(rest, `"`)
		if strings.TrimLeft(k, ",") == name {
			return v
		}
		labels = after
	}
}
