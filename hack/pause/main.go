// Command pause is the sandbox ("pause") container of the local cluster's
// pods: it holds the pod's namespaces open and does nothing else until the
// runtime stops it with SIGTERM or SIGINT, then exits 0.
//
// The local cluster cannot pull registry.k8s.io/pause, so `make pause-image`
// builds this one under that name and the cluster's containerd is pinned to
// it. Unlike the upstream pause it reaps no zombies: it would have to only in
// pods that share one process namespace, and the local cluster runs none.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
