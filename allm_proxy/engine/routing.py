"""Routing: which provider, model and family rules a request gets, and the models list.

Aliases (`[models."dall-e-3"] provider = "gemini", model = "..."`), the model
family table (capabilities.py, extended by `[families.NAME]`) and the default
model rule of the provider (its `AdapterInfo.default_model`, unless the proxy
is given one) all meet here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import errors
from ..adapters import get_adapter_info
from ..call import Route
from ..capabilities import ModelCatalog, ModelDefault
from ..config import ModelAlias
from ..types import ImageRequest


class Router:
    """Resolves the model a request names (or the default it gets) to a `Route`."""

    def __init__(
        self,
        provider: str,
        default_model: str | None = None,
        *,
        aliases: Mapping[str, ModelAlias | Mapping[str, str]] | None = None,
        families: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.provider = provider
        info = get_adapter_info(provider)
        # An explicit default always wins; else the provider's own rule.
        self.model_default = ModelDefault(fixed=default_model) if default_model else info.model_default
        self.aliases: dict[str, ModelAlias] = {}
        for name, alias in (aliases or {}).items():
            if not isinstance(alias, ModelAlias):
                alias = ModelAlias(name=name, provider=alias["provider"], model=alias["model"])
            get_adapter_info(alias.provider)  # an alias to an unknown provider fails now, not per request
            self.aliases[name] = alias
        self.catalog = ModelCatalog.from_config(families)

    @property
    def providers(self) -> list[str]:
        """The default provider and every provider an alias routes to, each once."""
        return list(dict.fromkeys([self.provider, *(a.provider for a in self.aliases.values())]))

    def route(self, request: ImageRequest) -> Route:
        requested = request.model or self.model_default.choose(request)
        if requested is None:
            # The provider decides: check only what no model accepts, and let it answer the rest.
            return Route(
                provider=self.provider,
                model=None,
                requested_model=None,
                family=self.catalog.for_provider(None, get_adapter_info(self.provider).rules),
            )
        alias = self.aliases.get(requested)
        provider, target = (alias.provider, alias.model) if alias else (self.provider, requested)
        # The name the client used decides the rules when it is a known family:
        # code written for dall-e-3 keeps dall-e-3's rules behind an alias.
        family = self.catalog.lookup(requested) or self.catalog.for_provider(target, get_adapter_info(provider).rules)
        return Route(provider=provider, model=target, requested_model=requested, family=family)

    def list_models(self) -> list[dict[str, Any]]:
        """The default models and every alias, in OpenAI's model-object shape."""
        defaults = [self.model_default.fixed, self.model_default.legacy, self.model_default.gpt]
        seen: dict[str, str] = {m: self.provider for m in defaults if m}
        for name, alias in self.aliases.items():
            seen[name] = alias.provider
        return [{"id": m, "object": "model", "created": 0, "owned_by": f"allm-proxy:{p}"} for m, p in seen.items()]

    def describe_model(self, model_id: str) -> dict[str, Any]:
        for entry in self.list_models():
            if entry["id"] == model_id:
                return entry
        if self.catalog.lookup(model_id) is not None:
            return {"id": model_id, "object": "model", "created": 0, "owned_by": f"allm-proxy:{self.provider}"}
        raise errors.ModelNotFoundError(
            f"The model `{model_id}` does not exist or is not configured in this proxy. "
            f"Configured here: {', '.join(e['id'] for e in self.list_models())}, and any id of a known model "
            "family (dall-e-*, gpt-image-*, gemini-*-image ...).",
            param="model",
        )
