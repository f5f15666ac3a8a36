"""Which provider key a call uses: the one resolution order (README, "Keys")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import errors
from ..adapters import AdapterInfo
from ..call import Call


def resolve_key(info: AdapterInfo, options: Mapping[str, Any], call: Call, env: Mapping[str, str]) -> str | None:
    """First that is set: the call's own key (X-ALLM-Api-Key, `api_key=`), the provider's configured key,
    its key variables in the proxy's environment, the client's Bearer token. None for a keyless provider."""
    if call.client_key:
        return call.client_key
    if options.get("api_key"):
        return str(options["api_key"])
    env_names = (options["api_key_env"],) if options.get("api_key_env") else info.key_env
    for name in env_names:
        if env.get(name):
            return env[name]
    if call.client_bearer:
        return call.client_bearer
    if info.needs_key:
        env_hint = " or ".join(env_names) or "the provider's key variable"
        raise errors.AuthenticationError(
            f"No API key for provider '{info.name}'. Set {env_hint} in the proxy's environment, "
            f"send the header X-ALLM-Api-Key, or give your client an api_key "
            f"(sent as Authorization: Bearer). In Python without the server: "
            f"generate_image(engine, ..., api_key=...) or image_adapter_opts={{'api_key': ...}}.",
        )
    return None
