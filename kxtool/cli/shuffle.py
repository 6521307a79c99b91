"""`kxtool shuffle` (being written)."""
