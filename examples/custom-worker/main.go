// Command custom-worker is a projectionist worker around projections of its
// own: what a team builds into its own image and names in a Projection's
// spec.image. The operator starts it exactly as it starts the stock image.
//
//	CGO_ENABLED=0 GOOS=linux go build -trimpath -o bin/custom-worker .
//
// See README.md for building the image and deploying it.
package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/projectionist/projectionist/pkg/projection"
	"github.com/projectionist/projectionist/worker"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	placed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custom_worker_order_cents_total",
		Help: "Cents of the orders order_ledger has recorded (counted when handled, also in batches that later rolled back).",
	})
	worker.Program{
		Projections: []projection.Projection{CustomerDirectory{}, OrderLedger{Placed: placed}},
		Setup:       setup,
		Collectors:  []prometheus.Collector{placed},
		Version:     version,
	}.Main()
}
