package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// envPath is the PATH of an image without a base, Docker's default.
const envPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildImage assembles the image: the base (or nothing), one layer of the
// executable and its files on top, and a config that names the platform,
// entrypoint and user (containerd's import drops an image whose config
// lacks the platform).
func buildImage(ctx context.Context, opts options) (v1.Image, error) {
	base, err := loadBase(ctx, opts)
	if err != nil {
		return nil, err
	}
	entries, err := layerEntries(opts)
	if err != nil {
		return nil, err
	}
	gz, err := buildLayer(entries, opts.epoch)
	if err != nil {
		return nil, fmt.Errorf("writing the layer: %w", err)
	}
	// The layer's media type follows the base's manifest: OCI manifests
	// list OCI layers, Docker manifests Docker layers.
	manifestType, err := base.MediaType()
	if err != nil {
		return nil, fmt.Errorf("reading the base's media type: %w", err)
	}
	layerType := types.OCILayer
	if manifestType == types.DockerManifestSchema2 {
		layerType = types.DockerLayer
	}
	// gz is compressed already, so go-containerregistry keeps its bytes
	// and digest as they are.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(layerType))
	if err != nil {
		return nil, fmt.Errorf("reading the layer back: %w", err)
	}

	created := v1.Time{Time: opts.epoch}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: layerType,
		History: v1.History{
			Created:   created,
			CreatedBy: fmt.Sprintf("projectionist-image: COPY %s %s", filepath.Base(opts.binary), opts.path),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("adding the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.Architecture, cf.OS = opts.arch, opts.os
	cf.Config.User = opts.user
	cf.Config.Entrypoint = opts.entrypoint
	// As a Dockerfile's ENTRYPOINT does, a new entrypoint drops the
	// base's command, which was meant for the base's entrypoint.
	cf.Config.Cmd = nil
	if cf.Config.WorkingDir == "" {
		cf.Config.WorkingDir = "/"
	}
	if !slices.ContainsFunc(cf.Config.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		cf.Config.Env = append(cf.Config.Env, envPath)
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("writing the config: %w", err)
	}
	return img, nil
}

// loadBase returns the -base image, or an empty OCI image if there is none.
func loadBase(ctx context.Context, opts options) (v1.Image, error) {
	if opts.base == "" {
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
	}
	var img v1.Image
	if info, err := os.Stat(opts.base); err == nil && !info.IsDir() {
		if img, err = tarball.ImageFromPath(opts.base, nil); err != nil {
			return nil, fmt.Errorf("-base %s: reading the archive (it must hold one image and a manifest.json, as `docker save` and -out write): %w", opts.base, err)
		}
	} else {
		ref, err := name.ParseReference(opts.base)
		if err != nil {
			return nil, fmt.Errorf("-base %q is neither a file nor an image reference: %w", opts.base, err)
		}
		img, err = remote.Image(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
			remote.WithPlatform(v1.Platform{OS: opts.os, Architecture: opts.arch}))
		if err != nil {
			return nil, fmt.Errorf("-base %s: pulling: %w", opts.base, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("-base %s: reading its config: %w", opts.base, err)
	}
	if cf.OS != opts.os || cf.Architecture != opts.arch {
		return nil, fmt.Errorf("-base %s is for %s/%s, not for -os %s -arch %s", opts.base, cf.OS, cf.Architecture, opts.os, opts.arch)
	}
	return img, nil
}
