"""Features, score and category of every pair, and the ranking."""
