-- Who manages a projection's topology, and who made its last switch.
--
-- managed_by is 'operator' once the Kubernetes operator has set the
-- partition count, and 'standalone' otherwise: a library or standalone
-- processor may switch a standalone topology (the projection guide's
-- pattern) but never an operator-managed one (DESIGN.md rule 8).
-- Existing rows become 'standalone', what they were in effect before; the
-- operator claims its projections again on its next reconcile.
--
-- ADD COLUMN with a constant default rewrites no rows (PostgreSQL 11+), so
-- this is quick on a populated database; IF NOT EXISTS keeps it idempotent.
ALTER TABLE projection_topology
    ADD COLUMN IF NOT EXISTS managed_by text NOT NULL DEFAULT 'standalone',
    ADD COLUMN IF NOT EXISTS switched_by text,
    ADD COLUMN IF NOT EXISTS switched_at timestamptz;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'projection_topology_managed_by_check'
                   AND conrelid = 'projection_topology'::regclass) THEN
        ALTER TABLE projection_topology ADD CONSTRAINT projection_topology_managed_by_check
            CHECK (managed_by IN ('operator', 'standalone'));
    END IF;
END
$$;
