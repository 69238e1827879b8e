"""Dedup: one row per gated pair (exact hash, MinHash signature, the pair kept for its group) and the
LSH band index that finds a new pair's candidates among everything deduplicated before.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE dedup (
    pair_id      text PRIMARY KEY REFERENCES pairs(pair_id),
    key          bigint NOT NULL UNIQUE,          -- the pair id's first 16 hex digits: what the bands hold
    kind         text NOT NULL,
    exact_hash   text NOT NULL,                   -- sha256 of the normalised instruction and response
    signature    bytea NOT NULL,                  -- MinHash of the response's shingles, uint32 little-endian
    duplicate_of text REFERENCES dedup(pair_id),  -- NULL: the pair kept for its group
    reason       text,                            -- exact | near (to the pair kept)
    similarity   real,                            -- estimated Jaccard similarity to the pair kept
    batch_id     text NOT NULL REFERENCES batches(batch_id)
);
CREATE INDEX dedup_exact ON dedup (exact_hash);
CREATE INDEX dedup_duplicate_of ON dedup (duplicate_of);
CREATE INDEX dedup_batch ON dedup (batch_id);

-- One row per band of each signature: the bucket hashes the band's values and the band's number, so
-- one bigint index serves every band. Kept narrow (16 bytes a row, one index, no foreign key: written
-- in the transaction that writes its dedup row): a million pairs have ~9 million.
CREATE TABLE dedup_bands (
    bucket  bigint NOT NULL,
    key     bigint NOT NULL                       -- dedup.key
);
CREATE INDEX dedup_bands_bucket ON dedup_bands (bucket);
"""

DOWNGRADE = "DROP TABLE dedup_bands; DROP TABLE dedup;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
