package controllers

// The manager's ClusterRole (config/rbac/role.yaml, written by `make
// manifests`) is generated from these markers alone, so that every verb the
// operator holds is listed, and justified, in one place. Least privilege:
//
//   - projections: read through the manager's cache (the reconciler's root
//     type), and patch for one field only, metadata.finalizers: the
//     finalizer that releases the projection name in the database when a
//     Projection is deleted (owner.go). No write to the spec: users own it.
//   - projections/status: the one status write per pass (update, or patch for
//     a server-side apply of the status).
//   - projections/finalizers: update, because controller owner references
//     set blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement
//     admission plugin allows only to who may update the owner's finalizers
//     (and for the release finalizer above).
//   - statefulsets, services: the children, written by server-side apply
//     (patch; create when the apply creates the object) and watched through
//     the cache. No update and no delete: owner references let the garbage
//     collector remove them with their Projection.
//   - poddisruptionbudgets: the worker pods' budget, applied like the
//     children above, and deleted when spec.podDisruptionBudget.enabled
//     turns false (the garbage collector cannot know that).
//   - secrets: read-only, for the database connection string.
//   - configmaps: get only, for the CA bundle a connection string's
//     sslrootcert names in one of the Projection's ConfigMap volumes.
//   - pods: read-only, to report a failing worker (its termination message)
//     in the Degraded condition.
//   - events.k8s.io events: mgr.GetEventRecorder writes events.k8s.io/v1
//     Events (create; patch when an event repeats as a series).
//
// Leader election (a Lease and core/v1 Events in the operator's own
// namespace) is a namespaced Role, config/rbac/leader_election_role.yaml,
// written by hand. So is config/rbac/metrics_auth_role.yaml (create on
// authentication.k8s.io tokenreviews and authorization.k8s.io
// subjectaccessreviews), which secure metrics need and plain HTTP metrics
// do not: a separate ClusterRole, as in kubebuilder's scaffold, so that an
// operator serving plain HTTP metrics does not hold it.

// +kubebuilder:rbac:groups=projectionist.dev,resources=projections,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=projectionist.dev,resources=projections/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=projectionist.dev,resources=projections/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
