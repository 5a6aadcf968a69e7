"""The pure core: events, fund state and the fold. Imports nothing from the rest of the package."""
