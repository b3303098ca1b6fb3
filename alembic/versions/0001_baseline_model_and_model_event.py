"""baseline: model and model_event

Revision ID: 0001
Revises: 
Create Date: 2026-11-27

The first schema: model configurations with their runtime state, and the event log.
Times are timezone-aware UTC (SQLite stores them without a zone; the app tags them UTC).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('served_name', sa.String(length=128), nullable=False),
    sa.Column('engine', sa.Enum('llamacpp', 'vllm', name='engine', native_enum=False, length=16), nullable=False),
    sa.Column('image', sa.String(length=255), nullable=False),
    sa.Column('source', sa.String(length=512), nullable=False),
    sa.Column('device', sa.Enum('cpu', 'cuda', name='device', native_enum=False, length=16), nullable=False),
    sa.Column('gpu_ids', sa.JSON(), nullable=True),
    sa.Column('context_size', sa.Integer(), nullable=True),
    sa.Column('gpu_layers', sa.Integer(), nullable=True),
    sa.Column('parallel_slots', sa.Integer(), nullable=True),
    sa.Column('threads', sa.Integer(), nullable=True),
    sa.Column('flash_attn', sa.Boolean(), nullable=True),
    sa.Column('cache_type_k', sa.String(length=16), nullable=True),
    sa.Column('cache_type_v', sa.String(length=16), nullable=True),
    sa.Column('embeddings', sa.Boolean(), nullable=False),
    sa.Column('tensor_parallel_size', sa.Integer(), nullable=True),
    sa.Column('gpu_memory_utilization', sa.Float(), nullable=True),
    sa.Column('dtype', sa.String(length=16), nullable=True),
    sa.Column('quantization', sa.String(length=32), nullable=True),
    sa.Column('max_model_len', sa.Integer(), nullable=True),
    sa.Column('max_num_seqs', sa.Integer(), nullable=True),
    sa.Column('enforce_eager', sa.Boolean(), nullable=False),
    sa.Column('trust_remote_code', sa.Boolean(), nullable=False),
    sa.Column('enable_prefix_caching', sa.Boolean(), nullable=True),
    sa.Column('extra_args', sa.JSON(), nullable=False),
    sa.Column('extra_env', sa.JSON(), nullable=False),
    sa.Column('hf_token', sa.String(length=512), nullable=True),
    sa.Column('startup_timeout_s', sa.Integer(), nullable=False),
    sa.Column('notes', sa.String(), nullable=False),
    sa.Column('state', sa.Enum('stopped', 'starting', 'loading', 'running', 'stopping', 'failed', name='modelstate', native_enum=False, length=16), nullable=False),
    sa.Column('state_reason', sa.String(), nullable=False),
    sa.Column('container_id', sa.String(length=80), nullable=True),
    sa.Column('host_port', sa.Integer(), nullable=True),
    sa.Column('spec_hash', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('served_name')
    )
    op.create_table('model_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=64), nullable=False),
    sa.Column('from_state', sa.Enum('stopped', 'starting', 'loading', 'running', 'stopping', 'failed', name='modelstate', native_enum=False, length=16), nullable=True),
    sa.Column('to_state', sa.Enum('stopped', 'starting', 'loading', 'running', 'stopping', 'failed', name='modelstate', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.String(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_event_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_event_model_id'), ['model_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('model_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_event_model_id'))
        batch_op.drop_index(batch_op.f('ix_model_event_created_at'))

    op.drop_table('model_event')
    op.drop_table('model')
