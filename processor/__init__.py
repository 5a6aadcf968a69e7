"""Insurance-fund stream processor: folds liquidation fills into per-currency insurance funds."""

__version__ = "0.1.0"
