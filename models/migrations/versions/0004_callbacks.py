"""callbacks: mode, next attempt, skill, flag, a kept place; their attempts (one claim each); tickets' improvement flag; queues' virtual hold

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 23:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

from models.base import UTCDateTime

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('callbacks') as batch:
        batch.add_column(sa.Column('mode', sa.String(length=32), nullable=False, server_default='auto'))
        batch.add_column(sa.Column('next_attempt_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('skill', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('flag', sa.Text(), nullable=True))
        batch.add_column(sa.Column('queue_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('queued_at', UTCDateTime(), nullable=True))
        batch.create_foreign_key(op.f('fk_callbacks_queue_id_queues'), 'queues', ['queue_id'], ['id'])
        batch.create_index(batch.f('ix_callbacks_next_attempt_at'), ['next_attempt_at'], unique=False)
    # 'pending' (never used by a release) is now 'scheduled'; the window's start is the first try.
    op.execute("UPDATE callbacks SET state = 'scheduled' WHERE state = 'pending'")
    op.execute("UPDATE callbacks SET next_attempt_at = due_from WHERE next_attempt_at IS NULL")
    with op.batch_alter_table('tickets') as batch:
        batch.add_column(sa.Column('improvement_flagged_at', UTCDateTime(), nullable=True))
    with op.batch_alter_table('queues') as batch:
        batch.add_column(sa.Column('virtual_hold_after_seconds', sa.Float(), nullable=True))
    op.create_table(
        'callback_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('callback_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('claimed_by', sa.String(length=128), nullable=False),
        sa.Column('claimed_at', UTCDateTime(), nullable=False),
        sa.Column('due_at', UTCDateTime(), nullable=True),
        sa.Column('dialled_at', UTCDateTime(), nullable=True),
        sa.Column('call_uid', sa.String(length=32), nullable=True),
        sa.Column('staff_id', sa.Integer(), nullable=True),
        sa.Column('ended_at', UTCDateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=32), nullable=True),
        sa.Column('answering_machine', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['callback_id'], ['callbacks.id'], name=op.f('fk_callback_attempts_callback_id_callbacks')),
        sa.ForeignKeyConstraint(['staff_id'], ['users.id'], name=op.f('fk_callback_attempts_staff_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_callback_attempts')),
        sa.UniqueConstraint('callback_id', 'number', name=op.f('uq_callback_attempts_callback_id')),
    )
    op.create_index(op.f('ix_callback_attempts_callback_id'), 'callback_attempts', ['callback_id'])


def downgrade() -> None:
    op.drop_table('callback_attempts')
    with op.batch_alter_table('queues') as batch:
        batch.drop_column('virtual_hold_after_seconds')
    with op.batch_alter_table('tickets') as batch:
        batch.drop_column('improvement_flagged_at')
    with op.batch_alter_table('callbacks') as batch:
        batch.drop_index(batch.f('ix_callbacks_next_attempt_at'))
        batch.drop_constraint(op.f('fk_callbacks_queue_id_queues'), type_='foreignkey')
        for column in ('queued_at', 'queue_id', 'flag', 'skill', 'next_attempt_at', 'mode'):
            batch.drop_column(column)
