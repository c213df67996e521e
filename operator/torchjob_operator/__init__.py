"""torchjob component."""
