"""Database layer: ORM models, engine/session factory, Alembic migrations and the repository (all DB access)."""
