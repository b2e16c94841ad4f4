"""API key scopes: "events" (send events in) and "scores" (read scores and the map out)

Keys made before scopes existed could do both, so they keep both: hospitals' integrations go on
working, and an admin narrows a key by making a new one and revoking the old. The default serves
only to fill the existing rows and is dropped, so no later insert gets both scopes by omission.
Downgrading drops the scopes; upgrading again gives every key both.

Revision ID: 0006_api_key_scopes
Revises: 0005_dashboard
Create Date: 2026-11-27 22:56:08.837765

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006_api_key_scopes'
down_revision = '0005_dashboard'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.String(length=40), nullable=False,
                                      server_default='events scores'))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.alter_column('scopes', server_default=None)


def downgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('scopes')
