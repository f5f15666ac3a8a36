"""The `allm-proxy` command. Thin: options are resolved here, the work lives in the package."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from .cli_config import config_option, option, resolve_config
from .cli_inspect import inspect, run
from .config import RecordMode, load_config

SERVE_EXAMPLES = """
\b
Examples:
  allm-proxy serve                                   # fake provider, no key, http://127.0.0.1:8400/v1
  OPENAI_API_KEY=sk-... allm-proxy serve --provider openai
  GEMINI_API_KEY=... allm-proxy serve --provider gemini --default-model gemini-3-pro-image
  allm-proxy serve --provider openai --cassette cassettes/demo.yaml --record-mode once
  allm-proxy serve --config allm.toml --port 9000
"""


class _LazyCommand(click.Group):
    """A subcommand group whose module (and vcrpy) is imported only when it is used,
    so `serve` starts without paying for it."""

    def __init__(self, name: str, load: Any, short_help: str) -> None:
        super().__init__(name, short_help=short_help, help=short_help)
        self._load = load

    def _group(self) -> click.Group:
        group = self._load()
        assert isinstance(group, click.Group)
        return group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._group().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._group().get_command(ctx, cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._group().format_help(ctx, formatter)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="allm-proxy")
def main() -> None:
    """A local proxy that speaks the OpenAI Images API in front of OpenAI, Gemini or a fake.

    \b
    Point any OpenAI SDK at it:
      OpenAI(base_url="http://127.0.0.1:8400/v1", api_key="sk-test-anything")
    """


@main.command(epilog=SERVE_EXAMPLES)
@config_option("TOML config file (flags override it).")
@option("--host", key="host", help="Address to bind. [default: 127.0.0.1]")
@option("--port", key="port", type=int, help="Port to listen on. [default: 8400]")
@option(
    "--provider",
    key="provider",
    help="Default provider: fake, openai, gemini, or an installed adapter (entry point). [default: fake]",
)
@option(
    "--default-model",
    key="default_model",
    help="Model for requests that name none. [default: fake: dall-e-2, or gpt-image-1.5 when GPT-image "
    "parameters are used, as OpenAI documents; openai: none sent, OpenAI decides; gemini: "
    "gemini-3-pro-image]",
)
@option(
    "--fake-script",
    key="fake_script",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/JSON list of scripted replies for the fake provider.",
)
@option("--cassette", key="cassette", help="Record/replay upstream traffic to this cassette file.")
@option("--cassette-dir", key="cassette_dir", help="Directory of cassettes chosen per request (X-ALLM-Cassette).")
@option(
    "--record-mode",
    key="record_mode",
    type=click.Choice([mode.value for mode in RecordMode]),
    help="Cassette record mode (vcrpy's meanings). [default: once]",
)
@option(
    "--replay-timing",
    key="replay_timing",
    type=click.Choice(["instant", "recorded"]),
    help="Replay streams instantly or with their recorded pacing. [default: instant]",
)
@option("--openai-base-url", key="openai_base_url", help="OpenAI API base. [default: https://api.openai.com/v1]")
@option(
    "--gemini-base-url",
    key="gemini_base_url",
    help="Gemini API base. [default: https://generativelanguage.googleapis.com]",
)
@option("--gemini-api-version", key="gemini_api_version", help="Gemini API version. [default: v1beta]")
@option(
    "--gemini-variations",
    key="gemini_variations",
    type=click.Choice(["reject", "emulate"]),
    help="Gemini has no variations: answer 400, or emulate them with an edit. [default: reject]",
)
@option(
    "--gemini-mask-hint/--no-gemini-mask-hint",
    key="gemini_mask_hint",
    default=None,
    help="Also send an edit's mask to Gemini as a hint image (the proxy composites either way).",
)
@option(
    "--gemini-max-concurrency",
    key="gemini_max_concurrency",
    type=int,
    help="Parallel generateContent calls for n > 1. [default: 4]",
)
@option(
    "--gemini-safety-code",
    key="gemini_safety_code",
    type=click.Choice(["content_policy_violation", "moderation_blocked"]),
    help="Error code for Gemini safety blocks. [default: content_policy_violation]",
)
@option(
    "--materialize-urls/--no-materialize-urls",
    key="materialize_urls",
    default=None,
    help="Fetch provider image URLs so answers (and recordings) keep the bytes.",
)
@option("--timeout", key="timeout", type=float, help="Upstream timeout in seconds. [default: 600]")
@option("--access-token", key="access_token", help="Require this token from clients (never sent upstream).")
@option("--max-body-mb", key="max_body_mb", type=float, help="Largest request body accepted. [default: 50]")
@option(
    "--journal/--no-journal",
    key="journal",
    default=None,
    help="Keep the request journal behind /allm/requests and the inspector page. [default: on]",
)
# --fault (repeatable; no variable, as specs hold spaces) and --fault-seed
@click.option(
    "--fault",
    "fault",
    multiple=True,
    metavar="SPEC",
    help="Inject a fault, e.g. 'latency; ms=300; p=0.5' (repeatable; replaces the config's [[faults]]).",
)
@option("--fault-seed", key="fault_seed", type=int, help="Seed that makes probabilistic faults reproducible.")
@option(
    "--state-url",
    key="state_url",
    help="Shared state in Redis, redis://HOST:PORT/DB, so workers and replicas act as one proxy. "
    "[default: process memory]",
)
@option(
    "--workers",
    key="workers",
    type=click.IntRange(min=1),
    help="Worker processes on the port (more than 1 needs --state-url). [default: 1]",
)
@option(
    "--log-level",
    key="log_level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level. [default: info]",
)
@click.pass_context
def serve(ctx: click.Context, /, config_path: Path | None, **flags: Any) -> None:
    """Serve the OpenAI Images API on HOST:PORT (default http://127.0.0.1:8400/v1)."""
    config = resolve_config(ctx, config_path, flags)
    from .engine import Engine
    from .server import bind_warning, run_server
    from .server.workers import WorkersStartupError, run_workers, setup_logging

    setup_logging(config.log_level)

    try:
        engine = Engine.from_config(config)
        asyncio.run(_check_adapters(engine))  # bad provider options or scripts fail now, as usage errors
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    warning = bind_warning(config.host, config.access_token)
    if warning:
        click.echo(warning, err=True)
    base = f"http://{_url_host(config.host)}:{config.port}/v1"
    click.echo(f"allm-proxy: provider={config.provider} default_model={engine.default_model} workers={config.workers}")
    if config.cassettes.enabled:
        where = config.cassettes.path or f"{config.cassettes.directory}/"
        click.echo(f"allm-proxy: cassettes {where} record_mode={config.cassettes.record_mode}")
    if config.state.url is not None:
        click.echo(f"allm-proxy: shared state {engine.state.describe()} prefix={config.state.prefix}")
    click.echo(f"allm-proxy: serving the OpenAI Images API at {base}")
    click.echo(f'  OpenAI(base_url="{base}", api_key="sk-test-anything")   # or OPENAI_BASE_URL={base}')
    click.echo(f"allm-proxy: inspector page at {base[:-3]}/allm/")
    log_level = "warning" if config.log_level != "debug" else "debug"
    if config.workers > 1:
        try:
            run_workers(config, log_level=log_level)
        except WorkersStartupError as exc:
            raise click.ClickException(str(exc)) from None
        return
    run_server(engine, config, log_level=log_level)


async def _check_adapters(engine: Any) -> None:
    try:
        await engine.prepare()
    finally:
        await engine.aclose()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


GENERATE_EXAMPLES = """
\b
Examples:
  allm-proxy generate "a watercolor kestrel" -o kestrel.png
  allm-proxy generate "a lighthouse at dusk" --size 1536x1024 --n 2 -o dusk.png   # dusk-1.png, dusk-2.png
  allm-proxy generate "a fox" --provider gemini --model gemini-3-pro-image -o fox.png
"""


@main.command(epilog=GENERATE_EXAMPLES)
@click.argument("prompt")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("image.png"),
    show_default=True,
    help="Where to write the image (numbered when --n > 1).",
)
@click.option("--model", help="Model. [default: as `serve --default-model` says, per provider]")
@click.option("--size", help="WIDTHxHEIGHT, e.g. 1024x1024.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="How many images.")
@click.option("--quality", help="low, medium, high, auto (GPT image); standard, hd (dall-e-3).")
@click.option("--output-format", type=click.Choice(["png", "jpeg", "webp"]), help="Image format.")
@click.option(
    "--provider", envvar="ALLM_PROXY_PROVIDER", default=None, help="fake, openai, gemini, or an installed adapter."
)
@config_option("TOML config file.")
def generate(
    prompt: str,
    output: Path,
    model: str | None,
    size: str | None,
    n: int,
    quality: str | None,
    output_format: str | None,
    provider: str | None,
    config_path: Path | None,
) -> None:
    """Generate images in-process (no server) and write them to files."""
    from .engine import Engine, generate_image
    from .errors import ProxyError

    try:
        config = load_config(config_path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if provider:
        config.provider = provider
    try:
        engine = Engine.from_config(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    opts: dict[str, Any] = {"n": n, "response_format": "b64_json"}
    for key, value in (("model", model), ("size", size), ("quality", quality), ("output_format", output_format)):
        if value is not None:
            opts[key] = value
    try:
        with engine:
            response = generate_image(engine, prompt, **opts)
    except ProxyError as err:
        raise click.ClickException(f"{err.status} {err.code or err.type}: {err.message}") from None
    paths = (
        [output]
        if len(response.images) == 1
        else [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, len(response.images) + 1)]
    )
    for path, image in zip(paths, response.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.to_binary())
        click.echo(f"wrote {path} ({image.mime_type}, {len(image.data)} bytes)")


def _cassettes_group() -> click.Command:
    from .cli_cassettes import cassettes

    return cassettes


main.add_command(_LazyCommand("cassettes", _cassettes_group, "List, show and verify cassettes."))

main.add_command(inspect)
main.add_command(run)
