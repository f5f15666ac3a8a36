"""Two `allm-proxy serve` processes recording into one cassette lose nothing (flock'd read-merge-write)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
from vcr.persisters.filesystem import FilesystemPersister
from vcr.serializers import jsonserializer

from tests.support.cassette_helpers import OPENAI_KEY
from tests.support.serve_process import recording_args
from tests.test_hardening_shutdown import serving
from tests.upstreams.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.slow  # two serve subprocesses

BURST = 50


def test_a_burst_split_between_two_processes_records_every_interaction_in_one_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "burst.json"
    upstream = FakeOpenAI()
    with upstream.serving() as upstream_url:
        args = recording_args(upstream_url, cassette, "new_episodes")
        with serving(*args) as (first, first_port), serving(*args) as (second, second_port):
            ports = [first_port, second_port]
            statuses: list[int] = []
            lock = threading.Lock()

            def send(i: int) -> None:
                answer = httpx.post(
                    f"http://127.0.0.1:{ports[i % 2]}/v1/images/generations",
                    headers={"x-allm-api-key": OPENAI_KEY},
                    json={
                        "model": "dall-e-2",
                        "prompt": f"prompt {i}",
                        "response_format": "b64_json",
                        "size": "256x256",
                    },
                    timeout=60,
                )
                with lock:
                    statuses.append(answer.status_code)

            threads = [threading.Thread(target=send, args=(i,)) for i in range(BURST)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=90)
            assert statuses == [200] * BURST
            for proc in (first, second):  # stopped by PID, as a service manager would
                os.kill(proc.pid, signal.SIGTERM)
                proc.communicate(timeout=30)
                assert proc.returncode == 0
    requests, responses = FilesystemPersister.load_cassette(str(cassette), jsonserializer)  # plain vcrpy
    assert len(requests) == len(responses) == BURST
    prompts = sorted(json.loads(r.body)["prompt"] for r in requests)
    assert prompts == sorted(f"prompt {i}" for i in range(BURST))
