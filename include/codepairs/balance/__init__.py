"""Per-category targets for the exported set, and synthesis where real pairs fall short."""
