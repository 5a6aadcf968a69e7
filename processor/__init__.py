"""Insurance-fund stream processor: folds liquidation fills into per-currency insurance funds."""

import os

__version__ = "0.1.0"

if os.environ.get("PROCESSOR_PURE") == "1":  # run the hot modules from source even where compiled
    from processor.native import import_from_source

    import_from_source()
