"""Alembic environment: the URL comes from the caller (prodclass.db.session), never a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from prodclass.db.tables import Base

config = context.config
url = config.attributes["url"]

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
