"""Long-running crash and hostile-input scenarios against a real broker (``make soak``)."""
