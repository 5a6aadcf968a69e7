"""Regenerate the expected outputs of every golden scenario (``make golden``). Review the diff."""

from __future__ import annotations

from pathlib import Path

from processor.codec import FillDecoder
from processor.config import Settings
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from processor.replay import OutputFiles, read_lines, replay_lines

GOLDEN = Path(__file__).resolve().parent
#: Dead letters carry processing time; golden runs pin it so the files are stable.
FIXED_CLOCK_MS = 1_700_000_000_000
OUTPUTS = ("deltas.jsonl", "adl.jsonl", "dlq.jsonl", "state.json", "adl_states.jsonl")


def scenarios() -> list[Path]:
    return sorted(path for path in GOLDEN.iterdir() if (path / "input.jsonl").is_file())


def settings_of(scenario: Path) -> dict[str, str]:
    """The scenario's settings as the worker's environment: the shared initial balances, then its
    ``settings.env`` (``NAME=VALUE`` lines) and its ``pools.toml``, when it has them."""
    env = {"FUND_INITIAL_BALANCES": "USDT=250000,BTC=1.5"}
    settings = scenario / "settings.env"
    if settings.is_file():
        for line in settings.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, value = line.partition("=")
                env[name.strip()] = value.strip()
    pools = scenario / "pools.toml"
    if pools.is_file():
        env["FUND_POOLS_FILE"] = str(pools)
    return env


def rules_of(scenario: Path) -> FundRules:
    return Settings.from_env(settings_of(scenario)).rules


def replay_scenario(scenario: Path, out: Path) -> None:
    ledger = Ledger(rules_of(scenario))
    pipeline = Pipeline(FillDecoder.from_schema_dir(), ledger, clock_ms=lambda: FIXED_CLOCK_MS)
    states = out / "adl_states.jsonl" if OUTPUTS[-1] in expected_outputs(scenario) else None
    outputs = OutputFiles(
        out / "state.json", out / "deltas.jsonl", out / "adl.jsonl", out / "dlq.jsonl", states
    )
    replay_lines(read_lines(str(scenario / "input.jsonl")), pipeline, outputs, "input.jsonl")


def expected_outputs(scenario: Path) -> tuple[str, ...]:
    """The files a scenario records: ADL state changes only under an ADL policy."""
    policy = rules_of(scenario)
    on = policy.default_drawdown is not None or bool(policy.drawdown)
    return OUTPUTS if on else OUTPUTS[:-1]


def main() -> None:
    for scenario in scenarios():
        replay_scenario(scenario, scenario / "expected")
        print(f"regenerated {scenario.relative_to(GOLDEN.parent.parent)}/expected")


if __name__ == "__main__":
    main()
