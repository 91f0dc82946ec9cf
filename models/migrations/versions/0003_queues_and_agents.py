"""queues with timers, menus and overflow; agents and their state history; call transfers

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 14:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

from models.base import UTCDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

QUEUE_COLUMNS = ('menu_key', 'wrap_up_seconds', 'ring_timeout_seconds', 'announce_seconds', 'max_wait_seconds',
                 'overflow_queue_id')


def upgrade() -> None:
    # batch mode: SQLite adds a foreign key only by rebuilding the table (nothing references queues' new column).
    with op.batch_alter_table('queues') as batch:
        batch.add_column(sa.Column('menu_key', sa.String(length=1), nullable=True))
        batch.add_column(sa.Column('wrap_up_seconds', sa.Float(), nullable=True))
        batch.add_column(sa.Column('ring_timeout_seconds', sa.Float(), nullable=True))
        batch.add_column(sa.Column('announce_seconds', sa.Float(), nullable=True))
        batch.add_column(sa.Column('max_wait_seconds', sa.Float(), nullable=True))
        batch.add_column(sa.Column('overflow_queue_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f('fk_queues_overflow_queue_id_queues'), 'queues', ['overflow_queue_id'], ['id'])
    op.create_table(
        'call_transfers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('from', sa.String(length=128), nullable=False),
        sa.Column('to', sa.String(length=128), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_call_transfers_call_id_calls')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_call_transfers')),
    )
    op.create_index(op.f('ix_call_transfers_call_id'), 'call_transfers', ['call_id'])
    op.create_table(
        'agents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.Enum('logged_out', 'available', 'ringing', 'on_call', 'wrap_up', 'paused',
                                   name='agentstate', native_enum=False, create_constraint=False, length=32),
                  nullable=False),
        sa.Column('reason', sa.String(length=128), nullable=False),
        sa.Column('since', UTCDateTime(), nullable=False),
        sa.Column('idle_since', UTCDateTime(), nullable=False),
        sa.Column('call_uid', sa.String(length=32), nullable=True),
        sa.Column('wrap_up_until', UTCDateTime(), nullable=True),
        sa.Column('queues', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agents_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_agents')),
        sa.UniqueConstraint('user_id', name=op.f('uq_agents_user_id')),
    )
    op.create_table(
        'agent_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=32), nullable=False),
        sa.Column('previous', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.String(length=128), nullable=False),
        sa.Column('call_uid', sa.String(length=32), nullable=True),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_events_agent_id_agents')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_events')),
    )
    op.create_index(op.f('ix_agent_events_agent_id'), 'agent_events', ['agent_id'])
    op.create_index(op.f('ix_agent_events_at'), 'agent_events', ['at'])


def downgrade() -> None:
    op.drop_table('agent_events')
    op.drop_table('agents')
    op.drop_table('call_transfers')
    with op.batch_alter_table('queues') as batch:
        batch.drop_constraint(op.f('fk_queues_overflow_queue_id_queues'), type_='foreignkey')
        for column in reversed(QUEUE_COLUMNS):
            batch.drop_column(column)
