"""Alembic's environment: migrate the connection :func:`bpcr.serve.database.migrate` hands over.

For ``alembic`` run by hand, ``sqlalchemy.url`` in the config names the database instead.
"""
from alembic import context
from sqlalchemy import engine_from_config, pool

from bpcr.serve.models import metadata

config = context.config


def run(connection) -> None:
    # render_as_batch: SQLite alters a table by copying it, which batch mode does for us.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as opened:
        run(opened)
