"""``allm-proxy cassettes list|show|verify|check``: look into cassettes.

The work lives in `cassettes.report` and, for `check`, `cassettes.check` and `cassettes.live`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .cassettes import check as drift_check
from .cassettes import live, report
from .cassettes.filters import SecretFilter
from .cli_config import config_option, option, resolve_config
from .config import ProxyConfig

_PATH = click.Path(exists=True, path_type=Path)


@click.group(name="cassettes")
def cassettes() -> None:
    """Inspect and check recorded cassettes (.json or .yaml)."""


@cassettes.command(name="list")
@click.argument("path", type=_PATH)
def list_(path: Path) -> None:
    """One line per interaction: method, path, model, prompt, status, images and their sizes.

    Then what the cassette's answers cost upstream, which replaying them saves (shipped prices; a
    model without a price counts nothing).
    """
    from .pricing import PriceTable, format_usd

    prices = PriceTable.from_config({})
    for cassette in report.cassette_files(path):
        if path.is_dir():
            click.echo(f"{cassette}:")
        entries = _read(cassette)
        for entry in entries:
            click.echo(report.line(entry))
        saved = report.total_cost(entries, prices)
        if saved is not None:
            click.echo(f"this cassette saved ${format_usd(saved)} (what its answers cost upstream)")


@cassettes.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("number", type=int, required=False)
@click.option(
    "--extract",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the input files and returned images of the interaction(s) to this directory.",
)
def show(path: Path, number: int | None, directory: Path | None) -> None:
    """Every interaction in full (or only NUMBER, as `list` numbers them), base64 shortened.

    \b
      allm-proxy cassettes show cassettes/demo-openai.json
      allm-proxy cassettes show cassettes/demo-openai.json 0 --extract out/
    """
    entries = _read(path)
    if number is not None and not 0 <= number < len(entries):
        raise click.BadParameter(f"the cassette has interactions 0 to {len(entries) - 1}", param_hint="NUMBER")
    chosen = entries if number is None else [entries[number]]
    if not chosen:
        click.echo(f"{path}: no interactions")
    click.echo("\n\n".join(report.show(entry) for entry in chosen))
    if directory is not None:
        for entry in chosen:
            for written in report.extract(entry, directory):
                click.echo(f"wrote {written}")


@cassettes.command()
@click.argument("paths", nargs=-1, required=True, type=_PATH)
def verify(paths: tuple[Path, ...]) -> None:
    """Check cassettes: they parse, hold no secrets, bodies decode, images open. Exit 1 on problems."""
    files = [f for p in paths for f in report.cassette_files(p)]
    problems = [problem for f in files for problem in report.verify(f)]
    for problem in problems:
        click.echo(problem)
    if problems:
        raise SystemExit(1)
    click.echo(f"ok: {len(files)} cassette{'s' if len(files) != 1 else ''}")


def _read(path: Path) -> list[report.Entry]:
    try:
        return report.read(path)
    except Exception as exc:  # shown to the user as the reason
        raise click.ClickException(f"{path} cannot be read: {exc}") from None


CHECK_EXAMPLES = """
\b
Examples:
  allm-proxy cassettes check cassettes/ --live              # asks first; off a terminal add --yes
  OPENAI_API_KEY=sk-... allm-proxy cassettes check cassettes/demo.json --live --yes --json
  allm-proxy cassettes check cassettes/ --live --yes --update   # re-record what drifted
  allm-proxy cassettes check old.json new.json              # two recordings of the same calls
\b
Exit status: 0 all same, 1 something drifted (or could not be sent), 2 usage.
"""


@cassettes.command(epilog=CHECK_EXAMPLES)
@click.argument("paths", nargs=-1, required=True, type=_PATH)
@click.option("--live", is_flag=True, help="Send every recorded request to the real API and compare the answers.")
@click.option("--yes", is_flag=True, help="Send without asking (needed when not on a terminal).")
@click.option("--update", is_flag=True, help="Re-record the drifted interactions in place (atomic writes).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@config_option("TOML config file, as `serve` reads it.")
@option(
    "--openai-base-url",
    key="openai_base_url",
    help="Send OpenAI requests here. [default: the host each request was recorded from]",
)
@option(
    "--gemini-base-url",
    key="gemini_base_url",
    help="Send Gemini requests here. [default: the host each request was recorded from]",
)
@option("--timeout", key="timeout", type=float, help="Seconds to wait for each answer. [default: 600]")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Requests in flight at once (--live).",
)
@click.pass_context
def check(
    ctx: click.Context,
    /,
    paths: tuple[Path, ...],
    live: bool,
    yes: bool,
    update: bool,
    as_json: bool,
    config_path: Path | None,
    concurrency: int,
    **flags: Any,
) -> None:
    """Do recordings still match the API? Compares answer shapes, not values.

    Status, error type and code, JSON key paths and value types, SSE event
    types, the number, format and size of images. One line per interaction:
    `same`, or `drift:` and what differs. With --live, PATHS are cassettes or
    directories, and every request is sent again with the key and base URLs
    `serve` would use; without it, PATHS are OLD NEW, two cassettes to compare.
    """
    config = resolve_config(ctx, config_path, flags)
    secret_filter = SecretFilter.from_settings(config.cassettes)
    if live:
        outcomes = _live_outcomes(config, paths, secret_filter, yes=yes, concurrency=concurrency)
    else:
        if len(paths) != 2 or not all(p.is_file() for p in paths):
            raise click.UsageError(
                "without --live, give two cassette files: OLD NEW (or add --live to "
                "check cassettes against the real API)"
            )
        outcomes = _guarded(lambda: drift_check.compare_cassettes(paths[0], paths[1]))
    if update:
        drift_check.update(outcomes, secret_filter)
    if as_json:
        click.echo(json.dumps(drift_check.report(outcomes), indent=2))
    else:
        for outcome in outcomes:
            click.echo(outcome.line())
        counts = drift_check.report(outcomes)["counts"]
        click.echo(", ".join(f"{n} {name}" for name, n in counts.items() if n) or "no interactions")
    if drift_check.report(outcomes)["drifted"]:
        raise SystemExit(1)


def _live_outcomes(
    config: ProxyConfig, paths: tuple[Path, ...], secret_filter: SecretFilter, *, yes: bool, concurrency: int
) -> list[drift_check.Outcome]:
    planned: list[live.Planned] = []
    outcomes: list[drift_check.Outcome] = []
    for cassette in [f for p in paths for f in report.cassette_files(p)]:
        sent, others = live.plan(cassette, _read(cassette))
        planned += sent
        outcomes += drift_check.skipped(cassette, others)
    if planned:
        endpoints = _endpoints(config, {p.provider for p in planned})
        click.echo(f"cassettes check: {drift_check.describe_plan(planned)}", err=True)
        if _on_terminal(sys.stdin) and not yes:
            click.confirm("Send them (image calls cost money)?", abort=True, err=True)
        elif not yes:
            raise click.UsageError(
                "not on a terminal, so nobody can confirm sending these requests: pass --yes to send them"
            )
        progress = _progress if _on_terminal(sys.stderr) else None
        sent_all = asyncio.run(
            live.resend_all(
                planned, endpoints, secret_filter, concurrency=concurrency, timeout=config.timeout, progress=progress
            )
        )
        outcomes += drift_check.compare_sent(sent_all)
    return drift_check.in_order(outcomes)


def _endpoints(config: ProxyConfig, providers: set[str]) -> dict[str, live.Endpoint]:
    """Base URL and key per provider, resolved as `serve` resolves them."""
    from .engine import Engine
    from .errors import ProxyError

    try:
        engine = Engine.from_config(config)
        keys = {name: engine.provider_key(name) for name in sorted(providers)}
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except ProxyError as err:
        raise click.UsageError(err.message) from None
    return {name: live.Endpoint(config.provider_options(name).get("base_url"), keys[name]) for name in providers}


def _on_terminal(stream: Any) -> bool:
    """Whether a person is at the other end of `stream` (tests pretend so)."""
    return bool(stream.isatty())


def _progress(done: int, total: int) -> None:
    click.echo(f"{done}/{total}", err=True)


def _guarded(work: Callable[[], list[drift_check.Outcome]]) -> list[drift_check.Outcome]:
    try:
        return work()
    except Exception as exc:  # a cassette that does not parse: its reason, not a traceback
        raise click.ClickException(f"cannot compare: {exc}") from None
