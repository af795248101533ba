// Command ociimage writes a one-layer container image of a static executable
// as an OCI image archive, without Docker or a registry: the local cluster
// imports it with `ctr -n k8s.io images import`, and `docker load` and
// `kind load image-archive` take it too.
//
//	go run ./hack/ociimage -binary bin/linux-amd64/projectionist \
//		-name docker.io/projectionist/projectionist:dev -out bin/images/projectionist-dev.tar
//
// The archive is a tar of an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) plus a Docker-style manifest.json beside it, both
// pointing at the same config and layer blobs. The layer holds the
// executable, an empty /tmp, and an /etc/passwd and /etc/group naming the
// image's user, so that tools print a name and kubelet's runAsNonRoot check
// sees a numeric user.
//
// The output depends only on the inputs: every timestamp is
// SOURCE_DATE_EPOCH (0 when unset), entries are sorted and owned by 0:0, so
// the same executable gives the same digests.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed and validated flags.
type options struct {
	binary     string   // -binary: the executable on this machine
	path       string   // -path: where it lands in the image
	name       string   // -name: fully qualified reference with a tag
	tag        string   // the tag of name
	out        string   // -out: the archive to write
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

const usage = `Usage: ociimage -binary PATH -name REGISTRY/REPO:TAG -out FILE [flags]

Writes a one-layer OCI image archive holding a static executable, for
'ctr -n k8s.io images import', 'docker load -i' and 'kind load image-archive'.
Timestamps come from SOURCE_DATE_EPOCH (0 when unset), so the same executable
gives the same bytes.

Flags:
`

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ociimage: %v\n", err)
		return exitUsage
	}
	img, err := writeArchive(opts)
	if err != nil {
		fmt.Fprintf(stderr, "ociimage: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "image:    %s\ndigest:   %s\narchive:  %s (%s)\n", opts.name, img.manifestDigest, opts.out, humanSize(img.archiveSize))
	return exitOK
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("ociimage", flag.ContinueOnError)
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
	fs.StringVar(&opts.out, "out", "", "the archive to write (required)")
	fs.StringVar(&entrypoint, "entrypoint", "", "the entrypoint: a path, space-separated words, or a JSON array (default: -path)")
	fs.StringVar(&opts.user, "user", "65532:65532", "the numeric UID[:GID] the container runs as")
	fs.StringVar(&opts.arch, "arch", runtime.GOARCH, "the image's architecture, spelled as GOARCH")
	fs.StringVar(&opts.os, "os", "linux", "the image's operating system")
	fs.Var(&extras, "extra", "SRC:DST: also copy the regular file SRC to DST in the image (repeatable; e.g. CA certificates)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q (every input is a flag)", fs.Args())
	}
	opts.extras = extras

	var missing []string
	for _, f := range []struct{ name, value string }{{"-binary", opts.binary}, {"-name", opts.name}, {"-out", opts.out}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return options{}, fmt.Errorf("missing %s (see -help)", strings.Join(missing, ", "))
	}

	var err error
	if opts.tag, err = checkName(opts.name); err != nil {
		return options{}, err
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

// writeFileAtomic writes the archive beside out and renames it into place, so
// a failed run never leaves a truncated archive under the final name.
func writeFileAtomic(out string, write func(io.Writer) error) (size int64, err error) {
	dir := filepath.Dir(out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return 0, err
	}
	if err := f.Chmod(0o644); err != nil {
		return 0, err
	}
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return 0, err
	}
	return info.Size(), nil
}

func humanSize(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
