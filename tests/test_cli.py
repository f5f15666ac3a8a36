"""The CLI: generate in-process, serve's option resolution, help with examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

from allm_proxy.cli import main, serve
from allm_proxy.cli_config import resolve_config


def test_generate_with_no_model_takes_dall_e_sizes(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    result = CliRunner().invoke(main, ["generate", "a red fox", "--size", "256x256", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with PILImage.open(out) as img:
        assert img.size == (256, 256) and img.format == "PNG"


def test_generate_writes_numbered_images(tmp_path: Path) -> None:
    out = tmp_path / "kestrel.png"
    result = CliRunner().invoke(
        main, ["generate", "a kestrel", "-o", str(out), "--n", "2", "--size", "1536x1024", "--model", "gpt-image-1.5"]
    )
    assert result.exit_code == 0, result.output
    for name in ("kestrel-1.png", "kestrel-2.png"):
        with PILImage.open(tmp_path / name) as img:
            assert img.size == (1536, 1024)


def test_generate_reports_a_bad_size_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["generate", "x", "-o", str(tmp_path / "x.png"), "--size", "7x7"])
    assert result.exit_code != 0 and "invalid_size" in result.output and "1024x1024" in result.output


def test_every_command_has_help_with_examples() -> None:
    runner = CliRunner()
    for args in (["--help"], ["serve", "--help"], ["generate", "--help"], ["cassettes", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
    assert "Examples:" in runner.invoke(main, ["serve", "--help"]).output
    assert "ALLM_PROXY_PORT" in runner.invoke(main, ["serve", "--help"]).output


def resolve(args: list[str], env: dict[str, str] | None = None):
    captured = {}

    def fake_serve(**kwargs):
        raise AssertionError("not used")

    import click

    @click.pass_context
    def grab(ctx, config_path, **flags):
        captured["config"] = resolve_config(ctx, config_path, flags)

    command = click.Command("serve", params=serve.params, callback=grab)
    result = CliRunner().invoke(command, args, env=env or {}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return captured["config"]


def test_flags_beat_environment_which_beats_config(tmp_path: Path) -> None:
    config_file = tmp_path / "allm.toml"
    config_file.write_text(
        'provider = "openai"\n[server]\nport = 9001\nhost = "127.0.0.2"\n'
        '[providers.openai]\nbase_url = "http://127.0.0.1:1/v1"\n'
        '[models."dall-e-3"]\nprovider = "fake"\nmodel = "gpt-image-1.5"\n'
    )
    from_file = resolve(["--config", str(config_file)])
    assert (from_file.provider, from_file.port, from_file.host) == ("openai", 9001, "127.0.0.2")
    assert from_file.aliases["dall-e-3"].model == "gpt-image-1.5"
    from_env = resolve(["--config", str(config_file)], env={"ALLM_PROXY_PORT": "9002"})
    assert from_env.port == 9002
    from_flag = resolve(
        ["--config", str(config_file), "--port", "9003", "--openai-base-url", "http://x/v1"],
        env={"ALLM_PROXY_PORT": "9002"},
    )
    assert from_flag.port == 9003 and from_flag.providers["openai"]["base_url"] == "http://x/v1"


def test_cassette_flags_default_to_record_mode_once(tmp_path: Path) -> None:
    config = resolve(["--cassette", str(tmp_path / "c.yaml")])
    assert config.cassettes.path and config.cassettes.record_mode == "once" and config.cassettes.enabled


def test_bad_config_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(bad)])
    assert result.exit_code == 2 and "prot" in result.output


def test_server_limits_come_from_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "allm.toml"
    config_file.write_text("[server]\nheader_timeout = 3\nbody_timeout = 20\nmax_inflight = 8\n")
    config = resolve(["--config", str(config_file)])
    assert (config.limits.header_timeout, config.limits.body_timeout, config.limits.max_inflight) == (3, 20, 8)
    assert config.limits.keep_alive == 5  # untouched keys keep their defaults


@pytest.mark.parametrize("worker", [False, True])
def test_serve_s_log_lines_keep_their_format_without_what_they_do_not_print(worker: bool) -> None:
    """`setup_logging` stops collecting the caller's frame, thread and (but for workers) pid for every
    line; the lines still say what the formats print, a worker's with its pid."""
    code = (
        "import logging, os; from allm_proxy.server.workers import setup_logging; "
        f"setup_logging('info', worker={worker}); "
        "logging.getLogger('allm_proxy.access').info('POST /v1/images/generations status=%d', 200); "
        "print(os.getpid())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    pid = done.stdout.strip()
    line = done.stderr.strip()
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} " + (rf"\[{pid}\] " if worker else "")
    assert re.fullmatch(pattern + r"INFO allm_proxy\.access: POST /v1/images/generations status=200", line), line
