"""Is a cassette still true? The work behind ``allm-proxy cassettes check``.

Two ways to get a second answer for each recorded interaction, then the same
comparison of shapes (`drift`):

- `compare_cassettes(old, new)`: another cassette of the same calls,
  interactions paired by request (method, path, query, body; the host may
  differ), the rest in order;
- `compare_sent(sent)`: the answers `live.resend_all` got from the real API.

`update(outcomes, secret_filter)` writes the fresh answers of drifted
interactions into their cassettes, atomically and through the secret filter.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcr.request import Request

from .drift import differences, shape_of
from .filters import SecretFilter
from .formats import format_for
from .live import Planned, Sent
from .matchers import build, request_key
from .persister import write_atomic
from .report import Entry, read
from .summary import summarize_request

# Where the request went may differ between two recordings of the same call; what was asked may not.
PAIR_ON = ("method", "path", "query", "body")


@dataclass
class Outcome:
    """The verdict on one interaction: `same`, `drift` (with `differences`), `error` or `skipped`."""

    cassette: Path
    index: int | None
    request: str
    differences: list[str] = field(default_factory=list)
    failure: str | None = None
    skipped: str | None = None
    fresh: dict[str, Any] | None = None  # the new answer, kept for --update
    updated: bool = False

    @property
    def verdict(self) -> str:
        if self.failure is not None:
            return "error"
        if self.skipped is not None:
            return "skipped"
        return "drift" if self.differences else "same"

    def line(self) -> str:
        where = f"{self.cassette} #{self.index}" if self.index is not None else f"{self.cassette}"
        text = {
            "same": "same",
            "drift": "drift: " + "; ".join(self.differences),
            "error": f"error: {self.failure}",
            "skipped": f"skipped: {self.skipped}",
        }[self.verdict]
        return f"{where} {self.request}: {text}" + (" (updated)" if self.updated else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "cassette": str(self.cassette),
            "index": self.index,
            "request": self.request,
            "result": self.verdict,
            "differences": self.differences,
            "error": self.failure,
            "skipped": self.skipped,
            "updated": self.updated,
        }


def request_line(request: Request) -> str:
    """``POST /v1/images/generations model=gpt-image-1``: enough to find the call, no prompt."""
    summary = summarize_request(request)
    return f"{summary.method} {summary.path}" + (f" model={summary.model}" if summary.model else "")


def compare_cassettes(old: Path, new: Path) -> list[Outcome]:
    """Each interaction of `old` against its counterpart in `new`."""
    old_entries, new_entries = read(old), read(new)
    matchers = build(PAIR_ON)
    waiting: dict[Hashable, deque[Entry]] = defaultdict(deque)
    for entry in new_entries:
        waiting[request_key(entry.request, matchers)].append(entry)
    pairs: list[tuple[Entry, Entry | None]] = []
    for entry in old_entries:
        queue = waiting.get(request_key(entry.request, matchers))
        pairs.append((entry, queue.popleft() if queue else None))
    paired = {id(n) for _, n in pairs if n is not None}
    # What no request matched is paired in order: the same call, asked a little differently.
    leftover = deque(e for e in new_entries if id(e) not in paired)
    pairs = [(o, n if n is not None else (leftover.popleft() if leftover else None)) for o, n in pairs]
    outcomes = []
    for was, now in pairs:
        outcome = Outcome(old, was.index, request_line(was.request))
        if now is None:
            outcome.differences = [f"not in {new}"]
        else:
            outcome.differences = differences(shape_of(was.response), shape_of(now.response))
            outcome.fresh = now.response
        outcomes.append(outcome)
    outcomes += [Outcome(new, e.index, request_line(e.request), [f"only in {new}"]) for e in leftover]
    return outcomes


def compare_sent(sent: Iterable[Sent]) -> list[Outcome]:
    """Each re-sent interaction's recorded answer against the one that came back."""
    outcomes = []
    for item in sent:
        entry = item.planned.entry
        outcome = Outcome(
            item.planned.cassette, entry.index, request_line(entry.request), failure=item.failure, fresh=item.response
        )
        if item.response is not None:
            outcome.differences = differences(shape_of(entry.response), shape_of(item.response))
        outcomes.append(outcome)
    return outcomes


def skipped(cassette: Path, entries: Iterable[Entry]) -> list[Outcome]:
    """Outcomes for interactions that are not image calls of a known provider (not sent)."""
    return [
        Outcome(cassette, e.index, request_line(e.request), skipped="not an OpenAI or Gemini image call, not sent")
        for e in entries
    ]


def in_order(outcomes: Iterable[Outcome]) -> list[Outcome]:
    return sorted(outcomes, key=lambda o: (str(o.cassette), -1 if o.index is None else o.index))


def update(outcomes: Sequence[Outcome], secret_filter: SecretFilter) -> list[Path]:
    """Re-record drifted interactions in place (one atomic write per cassette); the cassettes written."""
    fresh: dict[Path, dict[int, dict[str, Any]]] = defaultdict(dict)
    for outcome in outcomes:
        if outcome.verdict == "drift" and outcome.fresh is not None and outcome.index is not None:
            fresh[outcome.cassette][outcome.index] = outcome.fresh
    for path, answers in fresh.items():
        cassette_format = format_for(path)
        requests, responses, metadata = cassette_format.load(path)
        chunks = []
        for index, (request, response) in enumerate(zip(requests, responses, strict=True)):
            # Whatever wrote the cassette, what is written now holds no secret.
            clean, secrets = secret_filter.request(request)
            kept = answers.get(index) or secret_filter.response(response, secrets)
            chunks.append(cassette_format.dump_interaction(clean, kept))
        write_atomic(path, cassette_format.document(chunks, metadata))
    for outcome in outcomes:
        outcome.updated = outcome.index in fresh.get(outcome.cassette, {})
    return list(fresh)


def describe_plan(planned: Sequence[Planned]) -> str:
    """What a live check will send, for the question before it spends money."""
    providers = Counter(p.provider for p in planned)
    models = Counter(p.model or "(provider's default)" for p in planned)
    by_provider = ", ".join(f"{name} {count}" for name, count in sorted(providers.items()))
    by_model = ", ".join(f"{name} x{count}" for name, count in sorted(models.items()))
    noun = "request" if len(planned) == 1 else "requests"
    return f"{len(planned)} {noun} to send live ({by_provider}); models: {by_model}"


def report(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The machine-readable report (``--json``)."""
    counts = Counter(o.verdict for o in outcomes)
    return {
        "drifted": any(o.verdict in ("drift", "error") for o in outcomes),
        "counts": {k: counts.get(k, 0) for k in ("same", "drift", "error", "skipped")},
        "interactions": [o.to_json() for o in outcomes],
    }
