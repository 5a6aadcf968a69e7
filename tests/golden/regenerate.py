"""Regenerate the expected outputs of every golden scenario (``make golden``). Review the diff."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from processor.codec import FillDecoder
from processor.config import load_pools
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from processor.replay import OutputFiles, read_lines, replay_lines

GOLDEN = Path(__file__).resolve().parent
#: Dead letters carry processing time; golden runs pin it so the files are stable.
FIXED_CLOCK_MS = 1_700_000_000_000
#: The crash scenario starts its funds with money in them, so losses are partly paid, partly ADL'd.
RULES = FundRules(initial_balance={"USDT": Decimal("250000"), "BTC": Decimal("1.5")})


def scenarios() -> list[Path]:
    return sorted(path for path in GOLDEN.iterdir() if (path / "input.jsonl").is_file())


def rules_of(scenario: Path) -> FundRules:
    """The shared rules, with the scenario's ``pools.toml`` when it has one (SPEC section 7)."""
    pools = scenario / "pools.toml"
    return RULES._replace(pools=load_pools(str(pools))) if pools.is_file() else RULES


def replay_scenario(scenario: Path, out: Path) -> None:
    ledger = Ledger(rules_of(scenario))
    pipeline = Pipeline(FillDecoder.from_schema_dir(), ledger, clock_ms=lambda: FIXED_CLOCK_MS)
    outputs = OutputFiles(out / "state.json", out / "deltas.jsonl", out / "adl.jsonl", out / "dlq.jsonl")
    replay_lines(read_lines(str(scenario / "input.jsonl")), pipeline, outputs, "input.jsonl")


def main() -> None:
    for scenario in scenarios():
        replay_scenario(scenario, scenario / "expected")
        print(f"regenerated {scenario.relative_to(GOLDEN.parent.parent)}/expected")


if __name__ == "__main__":
    main()
