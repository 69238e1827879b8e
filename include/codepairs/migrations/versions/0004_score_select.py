"""Score and classify: one row per scored pair (features, score, explanation, category, whether the
ranking selected it), and the repository selection with every decision's reasons.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE pair_scores (
    pair_id       text PRIMARY KEY REFERENCES pairs(pair_id),
    score         double precision NOT NULL,       -- [0, 1]
    features      jsonb NOT NULL,                  -- every feature's value, by name
    explanation   text NOT NULL,                   -- the largest contributions, signed
    category      text NOT NULL,
    confidence    double precision NOT NULL,
    category_rule text NOT NULL,                   -- kind | files | ui | label | prefix | keyword | default
    rules_sha256  text NOT NULL,                   -- of the weights and rules: changed rules rescore
    selected      boolean,                         -- the ranking's decision (NULL until ranked)
    batch_id      text NOT NULL REFERENCES batches(batch_id)
);
CREATE INDEX pair_scores_batch ON pair_scores (batch_id);
CREATE INDEX pair_scores_rank ON pair_scores (category, score DESC, pair_id);
-- Author history: earlier commits of an author in a repository, earlier merged PRs of a login.
CREATE INDEX commits_author ON commits (repo_id, author_email, author_date);
CREATE INDEX gh_pulls_author ON gh_pulls (repo_id, (data->>'author'), merged_at);

CREATE TABLE repo_selection (
    repo_id       text PRIMARY KEY REFERENCES repositories(repo_id),
    decision      text NOT NULL,                   -- keep | reject
    reasons       jsonb NOT NULL,                  -- every check: name, passed, value, threshold
    licence       text,                            -- SPDX identifier or expression; NULL when none found
    licence_from  text NOT NULL,                   -- github | file:<path> | none
    metrics       jsonb NOT NULL,
    run_id        text,
    decided_at    timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE repo_selection; DROP INDEX gh_pulls_author; DROP INDEX commits_author; DROP TABLE pair_scores;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
