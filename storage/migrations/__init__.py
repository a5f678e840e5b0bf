"""Alembic migrations (script_location `storage:migrations`); run by `storage.migrate` when a Database opens."""
