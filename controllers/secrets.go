// Reading the Projection's Secret and opening its database.

package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/projectionist/projectionist/api/v1alpha1"
	"github.com/projectionist/projectionist/controllers/resources"
)

type secretData struct {
	resourceVersion string
	data            map[string][]byte
}

// secretData returns a Secret's data: from memory while the cached
// metadata shows the resourceVersion it was read at, else read from the
// API server.
func (r *ProjectionReconciler) secretData(ctx context.Context, key types.NamespacedName) (map[string][]byte, error) {
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.Client.Get(ctx, key, &m); err != nil {
		if apierrors.IsNotFound(err) {
			r.secrets.Delete(key)
		}
		return nil, err
	}
	if v, ok := r.secrets.Load(key); ok && v.(secretData).resourceVersion == m.ResourceVersion {
		return v.(secretData).data, nil
	}
	var secret corev1.Secret
	if err := r.APIReader.Get(ctx, key, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			r.secrets.Delete(key)
		}
		return nil, err
	}
	r.secrets.Store(key, secretData{resourceVersion: secret.ResourceVersion, data: secret.Data})
	return secret.Data, nil
}

// connect reads the Secret and opens the database. Failures are the
// user's to fix and become the Degraded condition, not an error.
func (r *ProjectionReconciler) connect(ctx context.Context, s *state) error {
	ref := s.projection.Spec.Database.SecretRef
	key := ref.Key
	if key == "" {
		key = resources.DefaultSecretKey
	}
	data, err := r.secretData(ctx, types.NamespacedName{Namespace: s.projection.Namespace, Name: ref.Name})
	switch {
	case apierrors.IsNotFound(err):
		s.degraded = &problem{v1alpha1.ReasonSecretNotFound,
			fmt.Sprintf("Secret %q not found in namespace %q; create it with the database connection string under key %q", ref.Name, s.projection.Namespace, key)}
		return nil
	case err != nil:
		return fmt.Errorf("reading Secret %q: %w", ref.Name, err)
	}
	dsn, ok := data[key]
	if !ok || len(dsn) == 0 {
		s.degraded = &problem{v1alpha1.ReasonSecretKeyNotFound,
			fmt.Sprintf("Secret %q has no key %q (or it is empty); put the database connection string there", ref.Name, key)}
		return nil
	}
	s.pool.dsn = string(dsn) // for redacting what the workers report
	local, files, prob, err := r.mountedTLSFiles(ctx, s.projection, string(dsn))
	if err != nil {
		return err
	}
	if prob != nil {
		s.degraded = prob
		return nil
	}
	db, err := r.dbs.get(ctx, local, files)
	if err != nil {
		s.degraded = &problem{reasonOf(err), "database of Secret " + ref.Name + ": " + redactErr(err, string(dsn))}
		return nil
	}
	s.pool = poolHandle{pool: db.pool, dsn: string(dsn), db: db}
	return nil
}

// closer closes the database pools when the manager stops.
type closer struct{ dbs *databases }

func (c closer) Start(ctx context.Context) error {
	<-ctx.Done()
	c.dbs.close()
	return nil
}
