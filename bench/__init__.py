"""The allm-proxy benchmark harness (`scripts/bench`, docs/benchmarks.md).

Modules, one job each:

- `bodies`     deterministic PNGs, OpenAI-shaped response bodies, request bodies
- `upstream`   a fast fake OpenAI upstream (raw asyncio HTTP/1.1), own process
- `loadgen`    a closed-loop keep-alive load generator that verifies bodies, own process
- `procs`      spawning, CPU pinning, /proc figures, killing everything on exit
- `targets`    what is measured: direct, pass-through, replay, fake
- `cassette_load`  loads one cassette through `allm_proxy.cassettes`, own process
- `figures`    the cassette figures and the load test (issue 6)
- `profile`    optional py-spy profiles of the measured server (`--profile`)
- `report`     the table and the JSON lines
- `run`        the command line (`python -m bench.run --help`)
"""
