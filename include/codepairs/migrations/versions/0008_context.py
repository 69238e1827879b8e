"""Context: the contents of the files a pair touches, before (and optionally after) the change.

``blobs`` holds each text once, keyed by the sha256 of what is stored (a file cut to the per-file bound
is a text of its own), so reruns and pairs that share a file version cost nothing. ``pair_context``
has one row per pair, side and touched file: the blob, or no blob and the reason (file added, binary,
missing object, over the pair's budget, ...), the file's size in the mirror, and whether it was cut.
``settings`` is a digest of the bounds the row was made under: a change of bounds makes it again.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE blobs (
    sha256  text PRIMARY KEY,         -- of content, UTF-8
    bytes   bigint NOT NULL,          -- of content, UTF-8
    content text NOT NULL
);
CREATE TABLE pair_context (
    pair_id      text NOT NULL,
    side         text NOT NULL,       -- before | after
    seq          integer NOT NULL,    -- the file's place in the pair's files
    path         text NOT NULL,
    object_id    text,                -- the git blob read, when there was one
    blob_sha256  text REFERENCES blobs(sha256),  -- NULL: nothing kept, see reason
    file_bytes   bigint,              -- the file's size in the mirror
    kept_bytes   bigint NOT NULL DEFAULT 0,
    truncated    boolean NOT NULL DEFAULT false,
    reason       text,                -- why nothing, or not all, was kept (NULL: kept whole)
    settings     text NOT NULL,       -- digest of the bounds it was made under
    run_id       text,
    PRIMARY KEY (pair_id, side, seq)
);
"""
LZ4 = """
DO $$
BEGIN
  IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_settings WHERE name = 'default_toast_compression') THEN
    ALTER TABLE blobs ALTER COLUMN content SET COMPRESSION lz4;
  END IF;
END $$;
"""
DOWNGRADE = "DROP TABLE pair_context; DROP TABLE blobs;"


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute(LZ4)  # where the server has it, as the other big texts (0001)


def downgrade() -> None:
    op.execute(DOWNGRADE)
