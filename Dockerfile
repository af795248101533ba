# syntax=docker/dockerfile:1
#
# The projectionist image, for those who build with Docker (BuildKit):
#
#	docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#		-t docker.io/projectionist/projectionist:dev .
#
# Never built where it was written (that machine has no Docker engine): it is
# kept correct by reading. `make image` writes the same kind of image without
# Docker, as an OCI archive: one static binary at /projectionist, user
# 65532:65532, no shell. The bases differ: distroless here (CA certificates,
# tzdata, /etc/passwd), only what cmd/projectionist-image writes there (CA
# certificates, /etc/passwd, /tmp; no tzdata).

# The builder runs on the build machine's platform and cross-compiles, which
# a static Go binary allows, so multi-platform builds need no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/projectionist /projectionist
USER 65532:65532
ENTRYPOINT ["/projectionist"]
