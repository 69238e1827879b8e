"""Exact and near-duplicate detection over the pairs."""
