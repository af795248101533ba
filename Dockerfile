# The projectionist image, for those who build with Docker (BuildKit):
#
#	docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#		-t docker.io/projectionist/projectionist:dev .
#
# `make image` writes the same kind of image without Docker, as an OCI
# archive: one static binary at /projectionist, user 65532:65532, no shell.
# The default bases differ: distroless here (CA certificates, tzdata,
# /etc/passwd), only what cmd/projectionist-image writes there (CA
# certificates, /etc/passwd, /tmp; no tzdata).
#
# Both bases are build arguments, for builders that cannot pull them:
# GO_IMAGE needs go (1.26) on PATH and a shell, BASE_IMAGE nothing at all.
# `make test-dockerfile` (hack/dockerfile-test.sh) builds this file in CI
# with both made locally, without network, and runs the result.
#
# No "# syntax=" line: the engine's built-in Dockerfile frontend (Docker
# 20.10 and later) has everything used here, and naming a frontend image
# would make every build pull it.

ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

# The builder runs on the build machine's platform and cross-compiles, which
# a static Go binary allows, so multi-platform builds need no emulation.
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# .git is not in the context (.dockerignore), so the binary carries no VCS
# stamp; VERSION is what `projectionist version` prints.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
	go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/projectionist ./cmd/projectionist

FROM ${BASE_IMAGE}
COPY --from=build /out/projectionist /projectionist
USER 65532:65532
ENTRYPOINT ["/projectionist"]
