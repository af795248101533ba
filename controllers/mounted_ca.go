package controllers

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/projectionist/projectionist/api/v1alpha1"
)

// The operator connects with the connection string the workers get. A
// private CA, or a client certificate, is typically a ConfigMap or Secret
// the Projection mounts into the worker pods (spec.volumes,
// spec.volumeMounts) and names with sslrootcert=, sslcert= and sslkey=
// <mount path>/<file>: paths that exist in the pods, not in the operator.
// So when one of them points into such a mount, the operator reads the
// file from the ConfigMap or Secret itself, takes the parameter out of the
// connection string (pgx would try to open the path) and uses the content
// in memory: it connects the way the pods do.

// mountedTLS is what the operator read from the Projection's volumes in
// place of the files the connection string names; nil where it names none
// in a ConfigMap or Secret volume.
type mountedTLS struct{ rootCA, cert, key []byte }

// tlsFileParams are the connection string's parameters that name files.
var tlsFileParams = []string{"sslrootcert", "sslcert", "sslkey"}

var (
	// kvParam is each of tlsFileParams among key=value pairs, quoted or not.
	kvParam = map[string]*regexp.Regexp{}
	// sslModeRequireKV is sslmode=require among key=value pairs.
	sslModeRequireKV = regexp.MustCompile(`(^|\s)sslmode\s*=\s*'?require'?(\s|$)`)
)

func init() {
	for _, name := range tlsFileParams {
		kvParam[name] = regexp.MustCompile(`(^|\s)` + name + `\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)
	}
}

// mountedTLSFiles returns dsn without the file parameters that name files
// under one of p's volumeMounts of a ConfigMap or Secret volume, and those
// files' contents; dsn as it is where there are none. A missing ConfigMap,
// Secret or key is the user's to fix: a *problem.
func (r *ProjectionReconciler) mountedTLSFiles(ctx context.Context, p *v1alpha1.Projection, dsn string) (string, mountedTLS, *problem, error) {
	var out mountedTLS
	dst := map[string]*[]byte{"sslrootcert": &out.rootCA, "sslcert": &out.cert, "sslkey": &out.key}
	for _, param := range tlsFileParams {
		file, strip := sslParam(dsn, param)
		if file == "" || !path.IsAbs(file) {
			continue
		}
		data, prob, err := r.mountedFile(ctx, p, param, file)
		if err != nil || prob != nil {
			return "", mountedTLS{}, prob, err
		}
		if data != nil {
			*dst[param] = data
			dsn = strip()
		}
	}
	return dsn, out, nil, nil
}

// mountedFile is the content of file, which parameter param names, when
// file lies under one of p's volumeMounts of a ConfigMap or Secret volume;
// nil otherwise.
func (r *ProjectionReconciler) mountedFile(ctx context.Context, p *v1alpha1.Projection, param, file string) ([]byte, *problem, error) {
	for _, m := range p.Spec.VolumeMounts {
		rel, ok := strings.CutPrefix(path.Clean(file), strings.TrimSuffix(path.Clean(m.MountPath), "/")+"/")
		if !ok || m.SubPath != "" || m.SubPathExpr != "" {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.Name == m.Name {
				return r.volumeFile(ctx, p.Namespace, &v, param, rel)
			}
		}
	}
	return nil, nil, nil
}

// volumeFile is the content of file rel in volume v, read from its
// ConfigMap or Secret: nil for another kind of volume.
func (r *ProjectionReconciler) volumeFile(ctx context.Context, ns string, v *corev1.Volume, param, rel string) ([]byte, *problem, error) {
	var (
		kind, name string
		items      []corev1.KeyToPath
		data       func() (map[string][]byte, error)
	)
	switch {
	case v.ConfigMap != nil:
		kind, name, items = "ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items
		data = func() (map[string][]byte, error) {
			var cm corev1.ConfigMap
			if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &cm); err != nil {
				return nil, err
			}
			out := map[string][]byte{}
			for k, s := range cm.Data {
				out[k] = []byte(s)
			}
			for k, b := range cm.BinaryData {
				out[k] = b
			}
			return out, nil
		}
	case v.Secret != nil:
		kind, name, items = "Secret", v.Secret.SecretName, v.Secret.Items
		data = func() (map[string][]byte, error) {
			return r.secretData(ctx, types.NamespacedName{Namespace: ns, Name: name})
		}
	default:
		return nil, nil, nil
	}
	key := rel
	if len(items) > 0 {
		key = ""
		for _, it := range items {
			if path.Clean(it.Path) == rel {
				key = it.Key
			}
		}
		if key == "" {
			return nil, &problem{v1alpha1.ReasonInvalidDSN, fmt.Sprintf(
				"%s names %s in volume %q, which none of the volume's items puts there", param, rel, v.Name)}, nil
		}
	}
	got, err := data()
	switch {
	case apierrors.IsNotFound(err):
		return nil, &problem{v1alpha1.ReasonCANotFound, fmt.Sprintf(
			"%s %q (volume %q, which holds the connection string's %s) not found in namespace %q", kind, name, v.Name, param, ns)}, nil
	case err != nil:
		return nil, nil, fmt.Errorf("reading %s %q: %w", kind, name, err)
	}
	b, ok := got[key]
	if !ok || len(b) == 0 {
		return nil, &problem{v1alpha1.ReasonCANotFound, fmt.Sprintf(
			"%s %q has no key %q (or it is empty), which the connection string's %s names as %s", kind, name, key, param, rel)}, nil
	}
	return b, nil, nil
}

// sslParam returns the value of file parameter name (one of
// tlsFileParams) of a URL or key=value connection string, and a function
// returning the string without it. Under sslmode=require, a root
// certificate makes libpq and pgx verify the server's chain (verify-ca):
// the string without sslrootcert says verify-ca then.
func sslParam(dsn, name string) (string, func() string) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", nil
		}
		q := u.Query()
		file := q.Get(name)
		return file, func() string {
			q.Del(name)
			if name == "sslrootcert" && q.Get("sslmode") == "require" {
				q.Set("sslmode", "verify-ca")
			}
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	m := kvParam[name].FindStringSubmatchIndex(dsn)
	if m == nil {
		return "", nil
	}
	v := dsn[m[4]:m[5]]
	if strings.HasPrefix(v, "'") && strings.HasSuffix(v, "'") && len(v) >= 2 {
		v = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(v[1 : len(v)-1])
	}
	return v, func() string {
		out := strings.TrimSpace(dsn[:m[0]] + dsn[m[1]:])
		if name != "sslrootcert" {
			return out
		}
		return sslModeRequireKV.ReplaceAllString(out, "${1}sslmode=verify-ca${2}")
	}
}
