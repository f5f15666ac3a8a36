"""`allm-proxy inspect PATH` and `allm-proxy run [serve options] -- CMD`. Thin: the work is in
`inspector` and `launcher`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

INSPECT_EXAMPLES = """
\b
Examples:
  allm-proxy inspect cassettes/                 # http://127.0.0.1:8401/allm/
  allm-proxy inspect tests/cassettes/demo.json --port 9001
"""

RUN_EXAMPLES = """
\b
Examples:
  allm-proxy run -- python -m pytest tests/
  allm-proxy run --provider openai --cassette-dir cassettes --record-mode none -- npx vitest run
  allm-proxy run --provider openai --cassette cassettes/e2e.json --record-mode once -- npx jest
"""


@click.command(epilog=INSPECT_EXAMPLES)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8401, show_default=True, help="Port to listen on.")
def inspect(path: Path, host: str, port: int) -> None:
    """Serve the inspector page for a cassette file or directory alone (no provider, no /v1 routes)."""
    import uvicorn

    from .inspector import PAGE
    from .server.app import create_inspect_app

    click.echo(f"allm-proxy: inspecting {path} at http://{host}:{port}{PAGE}")
    uvicorn.run(create_inspect_app(path), host=host, port=port, log_level="warning")


class _RunCommand(click.Command):
    """Everything before `--` is `serve` options, everything after it the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args:
            if any(a in ("-h", "--help") for a in args):
                return super().parse_args(ctx, args)
            raise click.UsageError("Put the command after `--`: allm-proxy run [serve options] -- CMD [ARGS...]", ctx)
        at = args.index("--")
        ctx.meta["allm_serve_args"], ctx.meta["allm_command"] = args[:at], args[at + 1 :]
        return super().parse_args(ctx, [])


@click.command(
    cls=_RunCommand,
    epilog=RUN_EXAMPLES,
    options_metavar="[SERVE OPTIONS] -- CMD [ARGS]...",
    context_settings={"ignore_unknown_options": True},
)
@click.pass_context
def run(ctx: click.Context, /, **_: Any) -> None:
    """Start `allm-proxy serve [serve options]` on a free port, run CMD against it, exit with CMD's status.

    CMD gets OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 and ALLM_PROXY_URL=http://127.0.0.1:PORT. The proxy is
    stopped (recordings flushed) when CMD ends; Ctrl-C stops both.
    """
    from .launcher import LaunchError, run_with_proxy

    serve_args, command = ctx.meta["allm_serve_args"], ctx.meta["allm_command"]
    if not command:
        raise click.UsageError("Nothing to run after `--`.", ctx)
    # `serve` is this command's sibling: a bad serve option fails here, as a usage error.
    root = ctx.find_root()
    serve = root.command.get_command(root, "serve") if isinstance(root.command, click.Group) else None
    if serve is not None:
        serve.make_context("serve", list(serve_args), parent=ctx)
    try:
        status = run_with_proxy(serve_args, command)
    except LaunchError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(status)
