"""call uid (the key of the call events journal) and recording gaps

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 12:00:00.000000
"""
import uuid

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: SQLite would rebuild the table for a NOT NULL column,
    # and the foreign keys into calls and recordings forbid dropping the old copy.
    op.add_column('calls', sa.Column('uid', sa.String(length=32), nullable=True))
    _give_every_call_a_uid()
    op.create_index(op.f('ix_calls_uid'), 'calls', ['uid'], unique=True)
    op.add_column('recordings', sa.Column('gap_seconds', sa.Float(), server_default='0', nullable=False))
    op.add_column('recordings', sa.Column('longest_gap_seconds', sa.Float(), server_default='0', nullable=False))


def _give_every_call_a_uid() -> None:
    calls = sa.table('calls', sa.column('id', sa.Integer()), sa.column('uid', sa.String(32)))
    bind = op.get_bind()
    for (call_id,) in bind.execute(sa.select(calls.c.id).where(calls.c.uid.is_(None))).all():
        bind.execute(sa.update(calls).where(calls.c.id == call_id).values(uid=uuid.uuid4().hex))


def downgrade() -> None:
    # Native DROP COLUMN (SQLite 3.35+), for the same reason as above.
    op.drop_column('recordings', 'longest_gap_seconds')
    op.drop_column('recordings', 'gap_seconds')
    op.drop_index(op.f('ix_calls_uid'), table_name='calls')
    op.drop_column('calls', 'uid')
