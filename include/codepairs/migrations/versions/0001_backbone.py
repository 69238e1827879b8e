"""Backbone schema: repositories, crawl state, commits, pairs, skips, batches, gate results, exports.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE repositories (
    repo_id        text PRIMARY KEY,            -- sha256 of the canonical source, first 16 hex
    source         text NOT NULL UNIQUE,        -- canonical clone URL or absolute path
    name           text NOT NULL,               -- owner/name or directory name, for people
    web_url        text,                        -- https://github.com/owner/name where known
    default_branch text,
    mirror_path    text,
    status         text NOT NULL DEFAULT 'new', -- new | crawled | skipped
    skip_reason    text,
    skip_detail    text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_crawled_at timestamptz
);

CREATE TABLE crawl_state (
    repo_id    text NOT NULL REFERENCES repositories(repo_id),
    branch     text NOT NULL,
    last_sha   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, branch)
);

CREATE TABLE runs (
    run_id      text PRIMARY KEY,
    stage       text NOT NULL,
    repo_id     text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running',  -- running | done | failed
    stats       jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Every artifact of every stage: what it holds (row count, sha256) and what it was made from.
CREATE TABLE batches (
    batch_id     text PRIMARY KEY,
    stage        text NOT NULL,
    run_id       text NOT NULL REFERENCES runs(run_id),
    repo_id      text,
    seq          integer NOT NULL,
    rows_in      bigint NOT NULL,
    rows_written bigint NOT NULL,
    sha256       text NOT NULL,
    made_from    jsonb NOT NULL DEFAULT '{}'::jsonb,
    validated    boolean NOT NULL DEFAULT false,  -- its stage's gate passed: data may move on
    extracted    boolean NOT NULL DEFAULT false,  -- crawl batches: the extract stage has read it
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_run ON batches (run_id);
CREATE INDEX batches_pending ON batches (stage, repo_id) WHERE NOT validated;

CREATE TABLE commits (
    repo_id         text NOT NULL REFERENCES repositories(repo_id),
    sha             text NOT NULL,
    parents         text[] NOT NULL,
    author_name     text NOT NULL,
    author_email    text NOT NULL,
    author_date     timestamptz NOT NULL,
    committer_name  text NOT NULL,
    committer_email text NOT NULL,
    committer_date  timestamptz NOT NULL,
    message         text NOT NULL,
    diff            text,                        -- NULL when over the size cap
    diff_bytes      bigint NOT NULL,             -- size of the whole diff as git printed it
    diff_truncated  boolean NOT NULL,
    files           jsonb NOT NULL,
    files_changed   integer NOT NULL,
    lines_added     bigint NOT NULL,
    lines_deleted   bigint NOT NULL,
    text_lossy      boolean NOT NULL,            -- message, diff or a path was not valid UTF-8
    patch_ok        boolean NOT NULL,            -- every file of the list has its patch section
    diff_sha256     text,                        -- of diff; NULL with it
    row_sha256      text NOT NULL,
    batch_id        text NOT NULL REFERENCES batches(batch_id),
    orphaned        boolean NOT NULL DEFAULT false,  -- no longer reachable after a force-push
    crawled_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, sha)
);
CREATE INDEX commits_batch ON commits (batch_id);

CREATE TABLE pairs (
    pair_id         text PRIMARY KEY,            -- sha256(kind, repo_id, sha), first 32 hex
    kind            text NOT NULL,
    repo_id         text NOT NULL REFERENCES repositories(repo_id),
    commit_sha      text NOT NULL,
    instruction     text NOT NULL,
    response        text,                        -- NULL: the whole diff of the commit (commits.diff)
    files           jsonb NOT NULL,
    dropped_files   jsonb NOT NULL,
    lines_added     bigint NOT NULL,
    lines_deleted   bigint NOT NULL,
    author_date     timestamptz NOT NULL,
    url             text,
    response_sha256 text NOT NULL,
    batch_id        text NOT NULL REFERENCES batches(batch_id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pairs_batch ON pairs (batch_id);

-- Pairs with their response text resolved (most commit pairs keep every file, and store the diff
-- once, in commits). Gates and export read this view.
CREATE VIEW pair_texts AS
SELECT p.pair_id, p.kind, p.repo_id, p.commit_sha, p.instruction, COALESCE(p.response, c.diff) AS response,
       p.files, p.dropped_files, p.lines_added, p.lines_deleted, p.author_date, p.url, p.response_sha256,
       p.batch_id, c.orphaned
FROM pairs p JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha;
CREATE INDEX pairs_repo_commit ON pairs (repo_id, commit_sha);

-- One row per thing left out, with its reason: nothing disappears silently.
CREATE TABLE skips (
    stage      text NOT NULL,
    repo_id    text NOT NULL,
    object_id  text NOT NULL,                    -- commit sha, or '' for the whole repository
    reason     text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    run_id     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, repo_id, object_id)
);

CREATE TABLE gate_results (
    id          bigserial PRIMARY KEY,
    suite       text NOT NULL,
    stage       text NOT NULL,
    run_id      text,
    target      text NOT NULL,
    success     boolean NOT NULL,
    evaluated   integer NOT NULL,
    failed      jsonb NOT NULL,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE exports (
    export_id       text PRIMARY KEY,             -- sha256 of the manifest
    out_dir         text NOT NULL,
    rows            bigint NOT NULL,
    files           integer NOT NULL,
    manifest        jsonb NOT NULL,
    run_id          text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
"""

# Diffs and responses are most of the bytes: lz4 compresses them several times faster than the
# default pglz, which is CPU the crawl needs on a small machine (see README, benchmark). Only where
# the server was built with lz4 (both the embedded PG 18 and Debian's PG 15 are).
LZ4 = """
DO $$
BEGIN
  IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_settings WHERE name = 'default_toast_compression') THEN
    ALTER TABLE commits ALTER COLUMN diff SET COMPRESSION lz4;
    ALTER TABLE commits ALTER COLUMN message SET COMPRESSION lz4;
    ALTER TABLE pairs ALTER COLUMN response SET COMPRESSION lz4;
    ALTER TABLE pairs ALTER COLUMN instruction SET COMPRESSION lz4;
  END IF;
END $$;
"""

DOWNGRADE = """
DROP VIEW pair_texts; DROP TABLE exports; DROP TABLE gate_results; DROP TABLE skips; DROP TABLE pairs;
DROP TABLE commits; DROP TABLE batches; DROP TABLE runs; DROP TABLE crawl_state; DROP TABLE repositories;
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute(LZ4)


def downgrade() -> None:
    op.execute(DOWNGRADE)
