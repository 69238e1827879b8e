"""What the safety rules redacted in each pair: ``pairs.redactions``, the count of each kind of finding
(``{"email": 2, "github_token": 1}``) replaced by its placeholder before the pair was stored.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE pairs ADD COLUMN redactions jsonb NOT NULL DEFAULT '{}'::jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE pairs DROP COLUMN redactions")
