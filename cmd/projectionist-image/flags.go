package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// options are the parsed and validated flags.
type options struct {
	binary     string   // -binary: the executable on this machine
	path       string   // -path: where it lands in the image
	name       string   // -name: fully qualified reference with a tag
	tag        string   // the tag of name
	ref        name.Tag // name, parsed, for -push
	out        string   // -out: the archive to write, "" for none
	push       bool     // -push: write the image to the registry of name
	base       string   // -base: a reference or an archive, "" for none
	entrypoint []string // -entrypoint: defaults to []string{path}
	user       string   // -user: numeric uid[:gid]
	uid, gid   int      // of user
	arch       string   // -arch: GOARCH spelling, which is also OCI's
	os         string   // -os
	extras     []extra  // -extra
	epoch      time.Time
}

// extra is one -extra SRC:DST file copied into the image.
type extra struct {
	src, dst string
}

// extraFlag collects repeated -extra flags.
type extraFlag []extra

func (e *extraFlag) String() string {
	parts := make([]string, len(*e))
	for i, x := range *e {
		parts[i] = x.src + ":" + x.dst
	}
	return strings.Join(parts, ",")
}

func (e *extraFlag) Set(s string) error {
	src, dst, ok := strings.Cut(s, ":")
	if !ok || src == "" || dst == "" {
		return fmt.Errorf("want SRC:DST, got %q", s)
	}
	*e = append(*e, extra{src: src, dst: dst})
	return nil
}

const usage = `Usage: projectionist-image -binary PATH -name REGISTRY/REPO:TAG (-out FILE | -push) [flags]

Builds a container image of one static executable, without Docker, and
writes it as an image archive for 'ctr -n k8s.io images import',
'docker load -i' and 'kind load image-archive' (-out), pushes it to the
registry that -name names (-push), or both. Timestamps come from
SOURCE_DATE_EPOCH (0 when unset), so the same inputs give the same bytes
and digests.

The image holds the executable at -path, /etc/passwd and /etc/group naming
the numeric -user, an empty /tmp, and the -extra files. With -base, it is
one layer on top of that image instead, holding the executable and the
-extra files only (the base brings /etc and /tmp); the base's environment
is kept, and -entrypoint and -user replace its entrypoint, command and user.

-push authenticates as 'docker login' and the credential helpers of
$DOCKER_CONFIG/config.json (default ~/.docker) say, anonymously if they
name nothing for the registry. Registries on localhost, loopback and
private addresses are spoken to over plain HTTP.

Examples:

  # A worker image from your own module, loaded into kind:
  CGO_ENABLED=0 GOOS=linux go build -trimpath -o bin/worker ./cmd/worker
  go run github.com/projectionist/projectionist/cmd/projectionist-image \
      -binary bin/worker -name docker.io/acme/worker:1 -out worker.tar
  kind load image-archive worker.tar

  # Pushed, with CA certificates for PostgreSQL's sslmode=verify-full:
  projectionist-image -binary bin/worker -name ghcr.io/acme/worker:1 -push \
      -extra /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt

  # On top of a base image (a reference, or an archive this tool wrote):
  projectionist-image -binary bin/worker -name docker.io/acme/worker:1 \
      -base gcr.io/distroless/static-debian12:nonroot -out worker.tar

  # For arm64 nodes:
  GOARCH=arm64 CGO_ENABLED=0 go build -trimpath -o bin/worker-arm64 ./cmd/worker
  projectionist-image -binary bin/worker-arm64 -arch arm64 \
      -name docker.io/acme/worker:1-arm64 -out worker-arm64.tar

From a module of your own, first record the tool and its dependencies
in go.mod and go.sum (else 'go run' stops at "missing go.sum entry"):

  go get -tool github.com/projectionist/projectionist/cmd/projectionist-image
  go tool projectionist-image -binary bin/worker -name docker.io/acme/worker:1 -out worker.tar

Exit status: 0 on success, 2 for bad flags, 1 when building, writing or
pushing fails.

Flags:
`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "projectionist-image: %v\n", err)
		return exitUsage
	}
	img, err := buildImage(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "projectionist-image: %v\n", err)
		return exitError
	}
	digest, err := img.Digest()
	if err != nil {
		fmt.Fprintf(stderr, "projectionist-image: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "image:    %s\ndigest:   %s\n", opts.name, digest)
	if opts.out != "" {
		size, err := writeArchive(opts, img)
		if err != nil {
			fmt.Fprintf(stderr, "projectionist-image: %v\n", err)
			return exitError
		}
		fmt.Fprintf(stdout, "archive:  %s (%s)\n", opts.out, humanSize(size))
	}
	if opts.push {
		if err := push(ctx, opts.ref, img); err != nil {
			fmt.Fprintf(stderr, "projectionist-image: %v\n", err)
			return exitError
		}
		fmt.Fprintf(stdout, "pushed:   %s@%s\n", strings.TrimSuffix(opts.name, ":"+opts.tag), digest)
	}
	return exitOK
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("projectionist-image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		opts       options
		entrypoint string
		extras     extraFlag
	)
	fs.StringVar(&opts.binary, "binary", "", "the static executable to put in the image (required)")
	fs.StringVar(&opts.path, "path", "/projectionist", "where the executable lands in the image (mode 0755, owner 0:0)")
	fs.StringVar(&opts.name, "name", "", "the image's fully qualified name with a tag, like docker.io/projectionist/projectionist:dev (required)")
	fs.StringVar(&opts.out, "out", "", "the archive to write (required unless -push)")
	fs.BoolVar(&opts.push, "push", false, "push the image to the registry -name names (as well as writing -out, if given)")
	fs.StringVar(&opts.base, "base", "", "put the layer on the base image `REF|FILE`: a reference (pulled for -os/-arch), or an archive file ('docker save', or -out of this tool) (default: none)")
	fs.StringVar(&entrypoint, "entrypoint", "", "the entrypoint: a path, space-separated words, or a JSON array (default: -path)")
	fs.StringVar(&opts.user, "user", "65532:65532", "the numeric UID[:GID] the container runs as")
	fs.StringVar(&opts.arch, "arch", runtime.GOARCH, "the image's architecture, spelled as GOARCH")
	fs.StringVar(&opts.os, "os", "linux", "the image's operating system")
	fs.Var(&extras, "extra", "copy the regular file SRC to DST in the image too (`SRC:DST`, repeatable; e.g. CA certificates)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q (every input is a flag)", fs.Args())
	}
	opts.extras = extras

	var missing []string
	for _, f := range []struct{ name, value string }{{"-binary", opts.binary}, {"-name", opts.name}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if opts.out == "" && !opts.push {
		missing = append(missing, "-out")
	}
	if len(missing) > 0 {
		return options{}, fmt.Errorf("missing %s (see -help)", strings.Join(missing, ", "))
	}

	var err error
	if opts.tag, err = checkName(opts.name); err != nil {
		return options{}, err
	}
	if opts.ref, err = name.NewTag(opts.name, name.StrictValidation); err != nil {
		return options{}, fmt.Errorf("-name %q: %w", opts.name, err)
	}
	if opts.path, err = imagePath("-path", opts.path); err != nil {
		return options{}, err
	}
	for i, x := range opts.extras {
		if opts.extras[i].dst, err = imagePath("-extra destination", x.dst); err != nil {
			return options{}, err
		}
	}
	if opts.entrypoint, err = parseEntrypoint(entrypoint, opts.path); err != nil {
		return options{}, err
	}
	if opts.uid, opts.gid, err = parseUser(opts.user); err != nil {
		return options{}, err
	}
	if opts.arch == "" || opts.os == "" {
		return options{}, errors.New("-arch and -os must not be empty")
	}
	if opts.epoch, err = sourceDateEpoch(); err != nil {
		return options{}, err
	}
	return opts, nil
}

// The grammar of github.com/distribution/reference, narrowed to what this
// tool accepts: a registry host, a repository path, and a tag.
var (
	domainPart = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	domain     = domainPart + `(?:\.` + domainPart + `)*(?::[0-9]+)?`
	pathPart   = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	tagPattern = `[\w][\w.-]{0,127}`
	refPattern = regexp.MustCompile(`^` + domain + `/` + pathPart + `(?:/` + pathPart + `)*:` + tagPattern + `$`)
)

// checkName accepts only fully qualified, tagged references and returns the
// tag. containerd names an imported image exactly as the archive says, while
// the kubelet asks for the normalized name (`projectionist:dev` means
// docker.io/library/projectionist:dev), so a short name would import as an
// image that no pod ever finds.
func checkName(name string) (tag string, err error) {
	first, rest, hasSlash := strings.Cut(name, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		suggest := "docker.io/" + name
		if !hasSlash {
			suggest = "docker.io/library/" + name
		}
		return "", fmt.Errorf("-name %q is not fully qualified: it must start with a registry host, like %q (containerd's import keeps the name as written, and the kubelet looks images up by their full name)", name, suggest)
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		tag = name[i+1:]
	}
	if tag == "" || strings.Contains(name, "@") {
		return "", fmt.Errorf("-name %q has no tag: give one, like %q", name, strings.TrimSuffix(strings.SplitN(name, "@", 2)[0], ":")+":dev")
	}
	if !refPattern.MatchString(name) {
		return "", fmt.Errorf("-name %q is not a valid image reference (the repository path is lowercase letters, digits and . _ - separators; the tag is at most 128 of letters, digits, _ . -)", name)
	}
	if first == "docker.io" && !strings.Contains(strings.TrimSuffix(rest, ":"+tag), "/") {
		return "", fmt.Errorf("-name %q: official Docker Hub images live under library/; write %q, the name the kubelet looks up", name, "docker.io/library/"+rest)
	}
	return tag, nil
}

// imagePath cleans an absolute path inside the image.
func imagePath(what, p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("%s %q must be an absolute path in the image", what, p)
	}
	p = path.Clean(p)
	if p == "/" {
		return "", fmt.Errorf("%s must name a file, not /", what)
	}
	return p, nil
}

func parseEntrypoint(s, binaryPath string) ([]string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return []string{binaryPath}, nil
	case strings.HasPrefix(s, "["):
		var words []string
		if err := json.Unmarshal([]byte(s), &words); err != nil || len(words) == 0 {
			return nil, fmt.Errorf("-entrypoint %q is not a non-empty JSON array of strings", s)
		}
		return words, nil
	default:
		return strings.Fields(s), nil
	}
}

// parseUser accepts "UID" or "UID:GID", numeric: the kubelet can check
// runAsNonRoot only against a numeric user.
func parseUser(s string) (uid, gid int, err error) {
	u, g, hasGID := strings.Cut(s, ":")
	uid, err = strconv.Atoi(u)
	if err == nil && hasGID {
		gid, err = strconv.Atoi(g)
	} else if err == nil {
		gid = uid
	}
	if err != nil || uid < 0 || gid < 0 || uid > 1<<31-1 || gid > 1<<31-1 {
		return 0, 0, fmt.Errorf("-user %q must be a numeric UID or UID:GID (the kubelet cannot check runAsNonRoot against a user name)", s)
	}
	return uid, gid, nil
}

// sourceDateEpoch is the time every entry and the config carry, per
// https://reproducible-builds.org/specs/source-date-epoch/.
func sourceDateEpoch() (time.Time, error) {
	v, ok := os.LookupEnv("SOURCE_DATE_EPOCH")
	if !ok || v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative count of seconds", v)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func humanSize(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
