"""Alembic environment: always run with the connection handed in by ``store.upgrade``."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table="codepairs_alembic_version")
with context.begin_transaction():
    context.run_migrations()
