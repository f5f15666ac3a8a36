"""``allm-proxy cassettes list|show|verify``: look into cassettes. The work lives in `cassettes.report`."""

from __future__ import annotations

from pathlib import Path

import click

from .cassettes import report

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

    prices = PriceTable.from_config({})  # hook: cost
    for cassette in report.cassette_files(path):
        if path.is_dir():
            click.echo(f"{cassette}:")
        entries = _read(cassette)
        for entry in entries:
            click.echo(report.line(entry))
        saved = report.total_cost(entries, prices)  # hook: cost
        if saved is not None:
            click.echo(f"this cassette saved ${format_usd(saved)} (what its answers cost upstream)")


@cassettes.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("number", type=int, required=False)
@click.option("--extract", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write the input files and returned images of the interaction(s) to this directory.")
def show(path: Path, number: int | None, directory: Path | None) -> None:
    """Every interaction in full (or only NUMBER, as `list` numbers them), base64 shortened.

    \b
      allm-proxy cassettes show cassettes/demo-openai.json
      allm-proxy cassettes show cassettes/demo-openai.json 0 --extract out/
    """
    entries = _read(path)
    if number is not None and not 0 <= number < len(entries):
        raise click.BadParameter(f"the cassette has interactions 0 to {len(entries) - 1}",
                                 param_hint="NUMBER")
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
