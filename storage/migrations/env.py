"""Alembic's environment: always run through `storage.migrate`, on the connection it hands over (so that the
migration shares the opening transaction and its lock) rather than on a URL of its own."""

from __future__ import annotations

from alembic import context

from storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through storage.Database.open(url), not the alembic command line")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
