"""tickets' handlers (处理人); calls' agent segments and supervisions (监听, 耳语, 强插)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

from models.base import UTCDateTime

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New tables only: nothing to rebuild, so no batch mode is needed on SQLite.
    op.create_table(
        'ticket_handlers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('since', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_ticket_handlers_ticket_id_tickets')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ticket_handlers_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ticket_handlers')),
        sa.UniqueConstraint('ticket_id', 'user_id', name=op.f('uq_ticket_handlers_ticket_id')),
    )
    op.create_index(op.f('ix_ticket_handlers_ticket_id'), 'ticket_handlers', ['ticket_id'])
    op.create_table(
        'call_segments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_id', sa.Integer(), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=False),
        sa.Column('ended_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_call_segments_call_id_calls')),
        sa.ForeignKeyConstraint(['agent_id'], ['users.id'], name=op.f('fk_call_segments_agent_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_call_segments')),
    )
    op.create_index(op.f('ix_call_segments_call_id'), 'call_segments', ['call_id'])
    op.create_table(
        'call_supervisions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_id', sa.Integer(), nullable=False),
        sa.Column('supervisor_id', sa.Integer(), nullable=True),
        sa.Column('extension', sa.String(length=32), nullable=False),
        sa.Column('mode', sa.String(length=32), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=False),
        sa.Column('ended_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_call_supervisions_call_id_calls')),
        sa.ForeignKeyConstraint(['supervisor_id'], ['users.id'], name=op.f('fk_call_supervisions_supervisor_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_call_supervisions')),
    )
    op.create_index(op.f('ix_call_supervisions_call_id'), 'call_supervisions', ['call_id'])


def downgrade() -> None:
    op.drop_table('call_supervisions')
    op.drop_table('call_segments')
    op.drop_table('ticket_handlers')
