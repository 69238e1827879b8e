"""Views for the filters every stage shares: the gated pairs (their batch passed the pairs gate, their
commit not orphaned by a force-push) and the exportable pairs (gated, of a repository select did not
reject). Stages read these instead of writing the joins again.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE VIEW gated_pairs AS
SELECT t.* FROM pair_texts t JOIN batches b ON b.batch_id = t.batch_id AND b.validated
WHERE NOT t.orphaned;
CREATE VIEW exportable_pairs AS
SELECT g.* FROM gated_pairs g LEFT JOIN repo_selection sel ON sel.repo_id = g.repo_id
WHERE COALESCE(sel.decision, 'keep') = 'keep';
"""
DOWNGRADE = "DROP VIEW exportable_pairs; DROP VIEW gated_pairs;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
