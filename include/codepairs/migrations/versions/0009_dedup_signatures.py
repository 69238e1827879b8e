"""Dedup signatures staged by shard: each pending pair's exact hash, MinHash signature and LSH band
buckets, computed by ``dedup_signatures`` on a shard of the pair-id keyspace (the CPU-heavy half of
dedup, run on many workers at once) and consumed by ``dedup_pairs`` (the single half that decides
duplicates against everything before). A row lives from its shard's batch until the dedup batch that
reads it, which deletes it in the same transaction as it writes the pair's ``dedup`` row: the table
holds only what is signed and not yet decided. ``params`` names what made the row (shingle size,
permutations, seed, bands): a row made under other settings is ignored and computed again.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE dedup_signatures (
    pair_id    text PRIMARY KEY,   -- no foreign key: written by shards in parallel, read by range
    params     text NOT NULL,      -- shingle_tokens/num_perm/seed/bands x rows it was made under
    exact_hash text NOT NULL,      -- as dedup.exact_hash
    signature  bytea NOT NULL,     -- as dedup.signature: num_perm uint32 little-endian
    buckets    bytea NOT NULL,     -- the bands' buckets, int64 little-endian (dedup_bands.bucket)
    batch_id   text NOT NULL       -- the dedup_signatures batch that wrote it
);
"""
DOWNGRADE = "DROP TABLE dedup_signatures;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
