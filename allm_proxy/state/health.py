"""`GET /readyz`: ready only when the provider is configured and the state store answers.

`/healthz` says the process lives; `/readyz` says a load balancer may send it
requests. A store that does not answer is a 503 `state_unavailable`; a
provider whose adapter cannot be built, a 503 `provider_not_configured`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import errors

if TYPE_CHECKING:
    from ..engine import Engine


async def readiness(engine: Engine) -> dict[str, Any]:
    """The `/readyz` body; raises the 503 error that says what is not ready."""
    try:
        await engine.prepare()
    except ValueError as exc:
        raise errors.ProviderNotConfiguredError(
            f"The provider '{engine.provider}' is not configured: {exc}. Fix the proxy's provider options."
        ) from None
    await engine.state.ping()
    return {"status": "ready", "provider": engine.provider, "state": engine.state.describe()}
