"""The liquidation fill's field lists (SPEC §2), shared by the hypothesis strategies
(``tests/strategies.py``) and the hostile stream (``testkit/hostile.py``)."""

from __future__ import annotations

DECIMAL_FIELDS = ("contract_size", "bankruptcy_price", "fill_price", "quantity", "unfilled_quantity", "fee")
REQUIRED_FIELDS = (
    "fill_id",
    "liquidation_id",
    "symbol",
    "margin_currency",
    "side",
    "bankruptcy_price",
    "fill_price",
    "quantity",
    "timestamp",
)
