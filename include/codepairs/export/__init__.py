"""The dataset on disk: shards, card, manifest, and their verification."""
