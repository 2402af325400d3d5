"""The leaf of the project: what every layer needs and that needs nothing of the project (no CLI either)."""
