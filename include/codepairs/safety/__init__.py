"""What keeps the dataset safe to publish: secrets and personal data redacted (``scrub``), benchmark
problems kept out (``contamination``), both applied to every pair as extract builds it (``screen``) and
checked again on the rows about to be exported (``checks``). Imports nothing of the stages."""
