"""Migrations: the schema Alembic builds is exactly the models' schema."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from models import Base
from models.db import engine


def test_migrations_match_the_models(settings):
    with engine(settings).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
