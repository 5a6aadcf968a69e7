"""Generate a deterministic stream of liquidation fills (a calm market, then a crash) as JSONL."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from processor import codec
from processor.simulate import fills


def lines(count: int, seed: int = 7) -> Iterator[bytes]:
    """The fills as JSON lines, each a bytes object of its own length: orjson's result keeps the
    buffer it was written into (4 KB or more), so a million of them held in a list took 8 GB and
    spread the messages a benchmark reads over all of it."""
    for fill in fills(count, seed):
        yield bytes(memoryview(codec.dumps(fill)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out = sys.stdout.buffer
    for line in lines(args.count, args.seed):
        out.write(line + b"\n")


if __name__ == "__main__":
    main()
