"""The command line of ``scripts/bench`` (``python -m bench.run --help``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import bodies as B
from .targets import PEERS, TARGETS

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("cassette", "load")
DEFAULT_TARGETS = ("direct", "reference", "passthrough", "replay", "fake", "cassette")


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    """The options of a run (`description`: the --help text above them)."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  scripts/bench --quick\n  scripts/bench --targets direct,passthrough --concurrency 1,16\n"
        "  scripts/bench --load --targets fake,replay",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: short cells, smaller cassette figures")
    parser.add_argument(
        "--targets", help=f"comma-separated, from {', '.join(TARGETS + GROUPS)} [default: {','.join(DEFAULT_TARGETS)}]"
    )
    parser.add_argument(
        "--peer",
        action="append",
        metavar="NAME",
        help=f"also measure a peer, from {', '.join(PEERS)}: installed on first use into "
        "bench-results/peers/ (reused later); skipped, with the reason, if it cannot be",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="run only the upload-memory scenario of issue 15 (peak RSS of 16 x 1 MB edits at C=16 "
        "and 4 x 40 MB edits, edit req/s at C=16), printing each target with PASS/FAIL. A "
        "report, not a test: exits 0 whatever it measured, non-zero only if something crashed",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="run only the instruction counts: the reference, pass-through and --then's allm-proxy "
        "under valgrind's callgrind, small and large requests at C=1, instructions per request and "
        "their ratios (the same for the same code, however loaded the machine; needs valgrind). "
        "--then, --workloads (small, large), --quick (a fifth of the requests), --time-limit, "
        "--proxy-log-level and --out apply; the other options do not",
    )
    parser.add_argument(
        "--memory-sizes",
        default="1,40",
        metavar="SMALL,BIG",
        help="MB of the two uploads of --memory [default: 1,40; the targets apply only to these]",
    )
    parser.add_argument("--load", action="store_true", help="add the load test of issue 6 (10,000 requests at C=64)")
    parser.add_argument("--workloads", help=f"comma-separated, from {', '.join(B.WORKLOADS)} [default: all]")
    parser.add_argument(
        "--concurrency", help="comma-separated levels for every workload [default: small 1,16; large 1,16,64; edit 16]"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per cell [default: 4; --quick 1.5]")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each cell [default: 1; --quick 0.3]")
    parser.add_argument("--load-requests", type=int, help="requests per load-test round [default: 10000]")
    parser.add_argument("--time-limit", type=float, default=600.0, help="skip what is left after this many seconds")
    parser.add_argument(
        "--proxy-log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the proxies' --log-level [default: info, as `allm-proxy serve` runs]",
    )
    parser.add_argument(
        "--upstream-gzip",
        action="store_true",
        help="the fake upstream answers gzip bodies when asked (as OpenAI's edge does)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the measured server with py-spy in every cell (needs py-spy in .venv)",
    )
    parser.add_argument(
        "--cassette-format",
        choices=["json", "yaml"],
        default="json",
        help="the cassettes the run records and replays [default: json, the proxy's default]",
    )
    parser.add_argument(
        "--reuse-proxy",
        action="store_true",
        help="one proxy per target for all its cells (default: a fresh proxy per cell, so that "
        "each cell's peak RSS is its own)",
    )
    parser.add_argument(
        "--no-journal",
        action="store_true",
        help="run the proxies with --no-journal (compare with a run without it)",
    )
    parser.add_argument(
        "--then",
        metavar="REV",
        help="also measure small pass-through and replay with the allm-proxy of git revision REV "
        "(exported to bench-results/then-SHA, run on this venv): the issue's 'today's'",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="run the whole plan N times and judge each check by its median over the rounds "
        "(ratios of small cells move by +-30%% between runs on a shared 2-core machine) [default: 1]",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="[default: bench-results/]")
    parser.add_argument("--keep-work", action="store_true", help="keep the bodies, cassettes and specs of the run")
    return parser.parse_args(argv)
