"""A checksum on every row that reaches an export: pairs (their instruction and tests were covered by
none), synthetic pairs and scores (whose rows only their batch's digest covered). The export checks
each row against it on the way out and ``codepairs audit`` rechecks every stored row; without it an
``UPDATE`` of a validated row went out in the next export. The pairs and synthetic pairs checksums are
Postgres's own ``sha256`` over text columns joined by U+001F (``ledger.text_digest``), so rows
already stored are backfilled here in SQL; a score's checksum is the one its batch digest was made of
(``quality.score.row_digest``: canonical JSON with floats, which SQL cannot reproduce), backfilled
in Python. Rows stored before this revision are trusted as they stand.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from codepairs import ledger

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


PAIR_PARTS = ("pair_id", "kind", "repo_id", "commit_sha", "instruction", "response_sha256", "tests")
SYNTHETIC_PARTS = ("pair_id", "method", "source_pair_id", "repo_id", "category", "instruction", "response_sha256")

UPGRADE = f"""
ALTER TABLE pairs ADD COLUMN row_sha256 text;
UPDATE pairs SET row_sha256 = {ledger.sql_text_digest(*PAIR_PARTS)};
ALTER TABLE pairs ALTER COLUMN row_sha256 SET NOT NULL;
ALTER TABLE synthetic_pairs ADD COLUMN row_sha256 text;
UPDATE synthetic_pairs SET row_sha256 = {ledger.sql_text_digest(*SYNTHETIC_PARTS)};
ALTER TABLE synthetic_pairs ALTER COLUMN row_sha256 SET NOT NULL;
ALTER TABLE pair_scores ADD COLUMN row_sha256 text;
"""
DOWNGRADE = """
ALTER TABLE pair_scores DROP COLUMN row_sha256;
ALTER TABLE synthetic_pairs DROP COLUMN row_sha256;
ALTER TABLE pairs DROP COLUMN row_sha256;
"""


def upgrade() -> None:
    from codepairs.quality.score import row_digest

    op.execute(UPGRADE)
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT pair_id, score, category, confidence, features FROM pair_scores")).all()
    if rows:
        conn.execute(sa.text("CREATE TEMP TABLE score_sha (pair_id text PRIMARY KEY, sha text) ON COMMIT DROP"))
        conn.execute(
            sa.text("INSERT INTO score_sha VALUES (:p, :s)"),
            [{"p": r[0], "s": row_digest(*r)} for r in rows],
        )
        conn.execute(
            sa.text("UPDATE pair_scores s SET row_sha256 = t.sha FROM score_sha t WHERE t.pair_id = s.pair_id")
        )
    op.execute("ALTER TABLE pair_scores ALTER COLUMN row_sha256 SET NOT NULL")


def downgrade() -> None:
    op.execute(DOWNGRADE)
