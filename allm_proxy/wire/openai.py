"""The OpenAI Images wire <-> core types, as the server uses it: parse requests, render answers.

A facade over the codec modules, which work both ways (the openai adapter
uses the other direction): `requests` (JSON and multipart bodies),
`responses` (`ImagesResponse`, the model list), `events` (the SSE stream).
"""

from __future__ import annotations

from .events import render_error_event, render_event
from .requests import parse_request
from .responses import render_models, render_response

__all__ = ["parse_request", "render_error_event", "render_event", "render_models", "render_response"]
