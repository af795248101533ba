// Command projectionist-image builds a container image of a static
// executable without Docker: it writes an image archive that
// `ctr -n k8s.io images import`, `docker load -i` and
// `kind load image-archive` all take, pushes the image to a registry, or
// both. It is how a team puts its own worker (a program calling
// worker.Main) into an image, from its own module:
//
//	CGO_ENABLED=0 GOOS=linux go build -trimpath -o bin/worker ./cmd/worker
//	go run github.com/projectionist/projectionist/cmd/projectionist-image \
//		-binary bin/worker -name docker.io/acme/worker:1 -out worker.tar
//
// (once `go get -tool github.com/projectionist/projectionist/cmd/projectionist-image`
// has put its dependencies in the module's go.sum; then `go tool
// projectionist-image` runs it too).
//
// The image has one layer on top of an empty base (or of -base): the
// executable, an empty /tmp, and an /etc/passwd and /etc/group naming the
// image's numeric user, so that tools print a name and the kubelet's
// runAsNonRoot check can check it. The config names the operating system,
// architecture, entrypoint and user, which containerd's import needs.
//
// The archive is a tar of an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) plus a Docker-style manifest.json beside it, both
// pointing at the same config and layer blobs. Images are assembled with
// github.com/google/go-containerregistry; -push writes them with its
// remote package, authenticating as `docker login` and the credential
// helpers in ~/.docker/config.json say (authn.DefaultKeychain).
//
// The output depends only on the inputs: every timestamp is
// SOURCE_DATE_EPOCH (0 when unset), entries are sorted and owned by 0:0, so
// the same executable gives the same bytes and digests.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
