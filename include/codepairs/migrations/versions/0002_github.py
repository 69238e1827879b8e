"""GitHub as a source: repository metadata, issues, pull requests, review comments, links, cursors.

Pairs may now come from GitHub (issue -> PR, review, debugging): ``pairs`` gains their lineage and
the tests kept apart from the response, and ``pair_texts`` no longer requires the pair's commit to
have been crawled from git (a PR's merge commit may be on a branch the git crawl does not follow).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE repositories ADD COLUMN github text;   -- owner/name on GitHub (lower case), where known

-- Each GitHub record keeps its normalised form in ``data`` (what ``row_sha256`` is computed over,
-- so a gate can recompute it) and copies what SQL filters on into typed columns.
CREATE TABLE gh_repos (
    repo_id     text PRIMARY KEY REFERENCES repositories(repo_id),
    full_name   text NOT NULL,
    license     text,                             -- SPDX id, NULL when GitHub names none
    archived    boolean NOT NULL,
    fork        boolean NOT NULL,
    default_branch text NOT NULL,
    pushed_at   timestamptz,
    data        jsonb NOT NULL,
    row_sha256  text NOT NULL,
    fetched_at  timestamptz NOT NULL DEFAULT now()
);

-- Where the last listing of a resource stopped, and the ETag of its first page.
CREATE TABLE gh_cursors (
    repo_id    text NOT NULL REFERENCES repositories(repo_id),
    resource   text NOT NULL,                     -- repo | issues | pulls | review_comments
    updated_to timestamptz,                       -- newest updated_at seen in a complete listing
    etag       text,
    full_at    timestamptz,                       -- last listing read whole (cursor and ETag ignored)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, resource)
);

CREATE TABLE gh_issues (
    repo_id     text NOT NULL REFERENCES repositories(repo_id),
    number      integer NOT NULL,
    state       text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    timeline_checked_at timestamptz,              -- updated_at of the issue when its timeline was read
    data        jsonb NOT NULL,
    row_sha256  text NOT NULL,
    batch_id    text NOT NULL REFERENCES batches(batch_id),
    PRIMARY KEY (repo_id, number)
);
CREATE INDEX gh_issues_batch ON gh_issues (batch_id);

CREATE TABLE gh_pulls (
    repo_id     text NOT NULL REFERENCES repositories(repo_id),
    number      integer NOT NULL,
    state       text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    merged_at   timestamptz,
    merge_commit_sha text,
    base_ref    text NOT NULL,
    head_sha    text NOT NULL,
    data        jsonb NOT NULL,
    row_sha256  text NOT NULL,
    batch_id    text NOT NULL REFERENCES batches(batch_id),
    PRIMARY KEY (repo_id, number)
);
CREATE INDEX gh_pulls_batch ON gh_pulls (batch_id);

-- A merged PR's diff and commits, fetched once per head and merge commit, in a pass of their own.
CREATE TABLE gh_pull_details (
    repo_id     text NOT NULL REFERENCES repositories(repo_id),
    number      integer NOT NULL,
    head_sha    text NOT NULL,
    merge_commit_sha text,
    diff        text,                             -- NULL over the cap, or when GitHub would not serve it
    data        jsonb NOT NULL,                   -- commits (sha, message, date), files, diff_sha256, unavailable
    row_sha256  text NOT NULL,
    batch_id    text NOT NULL REFERENCES batches(batch_id),
    PRIMARY KEY (repo_id, number)
);
CREATE INDEX gh_pull_details_batch ON gh_pull_details (batch_id);

CREATE TABLE gh_review_comments (
    repo_id     text NOT NULL REFERENCES repositories(repo_id),
    comment_id  bigint NOT NULL,
    pull_number integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    data        jsonb NOT NULL,
    row_sha256  text NOT NULL,
    batch_id    text NOT NULL REFERENCES batches(batch_id),
    PRIMARY KEY (repo_id, comment_id)
);
CREATE INDEX gh_review_comments_batch ON gh_review_comments (batch_id);

-- What changed between a reviewed commit and the PR's final head: the answer to a review comment.
CREATE TABLE gh_compares (
    repo_id    text NOT NULL REFERENCES repositories(repo_id),
    base_sha   text NOT NULL,
    head_sha   text NOT NULL,
    data       jsonb NOT NULL,                    -- commits (sha list) and files (path, status, patch)
    PRIMARY KEY (repo_id, base_sha, head_sha)
);

-- Every issue -> PR link, with how it was found (one row per method).
CREATE TABLE gh_links (
    repo_id      text NOT NULL REFERENCES repositories(repo_id),
    issue_number integer NOT NULL,
    pr_number    integer NOT NULL,
    method       text NOT NULL,                   -- pr_title | pr_body | commit_message | timeline_closed
                                                  -- | timeline_cross_reference
    evidence     text NOT NULL,                   -- the closing reference as written, or the event
    PRIMARY KEY (repo_id, issue_number, pr_number, method)
);

ALTER TABLE pairs ADD COLUMN lineage jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE pairs ADD COLUMN tests text;          -- test files' diff of the change, kept apart from the response

DROP VIEW pair_texts;
CREATE VIEW pair_texts AS
SELECT p.pair_id, p.kind, p.repo_id, p.commit_sha, p.instruction, COALESCE(p.response, c.diff) AS response,
       p.files, p.dropped_files, p.lines_added, p.lines_deleted, p.author_date, p.url, p.response_sha256,
       p.batch_id, COALESCE(c.orphaned, false) AS orphaned, p.lineage, p.tests
FROM pairs p LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha;
"""

LZ4 = """
DO $$
BEGIN
  IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_settings WHERE name = 'default_toast_compression') THEN
    ALTER TABLE gh_pull_details ALTER COLUMN diff SET COMPRESSION lz4;
    ALTER TABLE gh_issues ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE gh_compares ALTER COLUMN data SET COMPRESSION lz4;
  END IF;
END $$;
"""

DOWNGRADE = """
DROP VIEW pair_texts;
CREATE VIEW pair_texts AS
SELECT p.pair_id, p.kind, p.repo_id, p.commit_sha, p.instruction, COALESCE(p.response, c.diff) AS response,
       p.files, p.dropped_files, p.lines_added, p.lines_deleted, p.author_date, p.url, p.response_sha256,
       p.batch_id, c.orphaned
FROM pairs p JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha;
ALTER TABLE pairs DROP COLUMN tests; ALTER TABLE pairs DROP COLUMN lineage;
DROP TABLE gh_links; DROP TABLE gh_compares; DROP TABLE gh_review_comments; DROP TABLE gh_pull_details;
DROP TABLE gh_pulls;
DROP TABLE gh_issues; DROP TABLE gh_cursors; DROP TABLE gh_repos;
ALTER TABLE repositories DROP COLUMN github;
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute(LZ4)


def downgrade() -> None:
    op.execute(DOWNGRADE)
