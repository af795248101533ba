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
// private CA is typically a ConfigMap or Secret the Projection mounts into
// the worker pods (spec.volumes, spec.volumeMounts) and names with
// sslrootcert=<mount path>/<file>: a path that exists in the pods, not in
// the operator. So when sslrootcert points into such a mount, the operator
// reads the file from the ConfigMap or Secret itself, takes the parameter
// out of the connection string (pgx would try to open the path) and
// verifies the server against that CA in memory: it connects the way the
// pods do.

// sslRootCertKV is sslrootcert among key=value pairs, quoted or not.
var (
	sslRootCertKV    = regexp.MustCompile(`(^|\s)sslrootcert\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)
	sslModeRequireKV = regexp.MustCompile(`(^|\s)sslmode\s*=\s*'?require'?(\s|$)`)
)

// mountedRootCA returns dsn without its sslrootcert and the CA bundle that
// parameter names, when it names a file under one of p's volumeMounts of a
// ConfigMap or Secret volume; otherwise dsn as it is and no bundle. A
// missing ConfigMap, Secret or key is the user's to fix: a *problem.
func (r *ProjectionReconciler) mountedRootCA(ctx context.Context, p *v1alpha1.Projection, dsn string) (string, []byte, *problem, error) {
	file, strip := sslRootCert(dsn)
	if file == "" || !path.IsAbs(file) {
		return dsn, nil, nil, nil
	}
	for _, m := range p.Spec.VolumeMounts {
		rel, ok := strings.CutPrefix(path.Clean(file), strings.TrimSuffix(path.Clean(m.MountPath), "/")+"/")
		if !ok || m.SubPath != "" || m.SubPathExpr != "" {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			data, prob, err := r.volumeFile(ctx, p.Namespace, &v, rel)
			if err != nil || prob != nil {
				return "", nil, prob, err
			}
			if data == nil {
				return dsn, nil, nil, nil // not a ConfigMap or Secret volume
			}
			return strip(), data, nil, nil
		}
	}
	return dsn, nil, nil, nil
}

// volumeFile is the content of file rel in volume v, read from its
// ConfigMap or Secret: nil for another kind of volume.
func (r *ProjectionReconciler) volumeFile(ctx context.Context, ns string, v *corev1.Volume, rel string) ([]byte, *problem, error) {
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
				"sslrootcert names %s in volume %q, which none of the volume's items puts there", rel, v.Name)}, nil
		}
	}
	got, err := data()
	switch {
	case apierrors.IsNotFound(err):
		return nil, &problem{v1alpha1.ReasonCANotFound, fmt.Sprintf(
			"%s %q (volume %q, which holds the connection string's sslrootcert) not found in namespace %q", kind, name, v.Name, ns)}, nil
	case err != nil:
		return nil, nil, fmt.Errorf("reading %s %q: %w", kind, name, err)
	}
	b, ok := got[key]
	if !ok || len(b) == 0 {
		return nil, &problem{v1alpha1.ReasonCANotFound, fmt.Sprintf(
			"%s %q has no key %q (or it is empty), which the connection string's sslrootcert names as %s", kind, name, key, rel)}, nil
	}
	return b, nil, nil
}

// sslRootCert returns the sslrootcert of a URL or key=value connection
// string, and a function returning the string without it. Under
// sslmode=require, a root certificate makes libpq and pgx verify the
// server's chain (verify-ca): the string without one says verify-ca then.
func sslRootCert(dsn string) (string, func() string) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", nil
		}
		q := u.Query()
		file := q.Get("sslrootcert")
		return file, func() string {
			q.Del("sslrootcert")
			if q.Get("sslmode") == "require" {
				q.Set("sslmode", "verify-ca")
			}
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	m := sslRootCertKV.FindStringSubmatchIndex(dsn)
	if m == nil {
		return "", nil
	}
	v := dsn[m[4]:m[5]]
	if strings.HasPrefix(v, "'") && strings.HasSuffix(v, "'") && len(v) >= 2 {
		v = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(v[1 : len(v)-1])
	}
	return v, func() string {
		out := strings.TrimSpace(dsn[:m[0]] + dsn[m[1]:])
		return sslModeRequireKV.ReplaceAllString(out, "${1}sslmode=verify-ca${2}")
	}
}
