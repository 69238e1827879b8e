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

-- Pairs made where real data falls short of a category's target: how, and from which real pair.
CREATE TABLE synthetic_pairs (
    pair_id         text PRIMARY KEY,               -- sha256 of the method and its source, first 32 hex
    method          text NOT NULL,                  -- ui_component | llm:<model>
    source_pair_id  text NOT NULL REFERENCES pairs(pair_id),
    repo_id         text NOT NULL REFERENCES repositories(repo_id),
    category        text NOT NULL,
    instruction     text NOT NULL,
    response        text NOT NULL,
    response_sha256 text NOT NULL,
    detail          jsonb NOT NULL,                 -- the component file and commit, or the model
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The balanced set: one row per exported slot, rewritten whole by each balance run.
CREATE TABLE balanced (
    pair_id   text NOT NULL,                        -- a pair, or a synthetic pair
    copy      integer NOT NULL,                     -- 1, or 2.. for upsampled copies
    category  text NOT NULL,
    synthetic boolean NOT NULL,
    reason    text NOT NULL,                        -- selected | upsampled | synthetic
    run_id    text NOT NULL,
    batch_id  text REFERENCES batches(batch_id),
    PRIMARY KEY (pair_id, copy)
);

-- A few random pairs of each stage run, with their features and decisions, for a person to read.
CREATE TABLE spot_checks (
    stage      text NOT NULL,
    run_id     text NOT NULL,
    pair_id    text NOT NULL,
    sample     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, run_id, pair_id)
);
"""

DOWNGRADE = """
DROP TABLE spot_checks; DROP TABLE balanced; DROP TABLE synthetic_pairs; DROP TABLE repo_selection;
DROP INDEX gh_pulls_author; DROP INDEX commits_author; DROP TABLE pair_scores;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
