"""Azure OpenAI: the OpenAI wire protocol on deployment URLs, with an `api-key` header.

The base URL is the resource endpoint (`https://<resource>.openai.azure.com`); the
model name of an LLM is its deployment name. Discovery lists the deployments an
administrator entered in `options["deployments"]` (names, or objects with
`name`, `model` and `kind`), since listing them needs Azure management rights a
gateway should not hold.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from meshsite.lib import http

from .base import DiscoveredModel, ProviderError
from .openai import OpenAIAdapter, model_kind

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAIAdapter):
    kind = "azure_openai"
    default_base_url = ""

    def __init__(self, config) -> None:
        super().__init__(config)
        base = self.base_url
        # Accept the endpoint with or without the `/openai` path some portals show.
        self.base_url = base[: -len("/openai")] if base.endswith("/openai") else base
        self.api_version = config.api_version or DEFAULT_API_VERSION

    def _build_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        key = self.config.secrets.get("api_key")
        if key:
            headers["api-key"] = key
        return headers

    def _url(self, model: str, operation: str) -> str:
        deployment = quote(model, safe="")
        return (
            f"{self.base_url}/openai/deployments/{deployment}/{operation}"
            f"?api-version={quote(self.api_version, safe='')}"
        )

    # --- off the hot path -------------------------------------------------------------------

    def deployments(self) -> list[DiscoveredModel]:
        found = []
        for entry in self.config.options.get("deployments") or []:
            if isinstance(entry, str):
                entry = {"name": entry}
            if not isinstance(entry, dict) or not entry.get("name"):
                continue
            name = str(entry["name"])
            model = str(entry.get("model") or "")
            kind = entry.get("kind") or model_kind(model or name)
            description = f"Deployment of {model}." if model else ""
            found.append(DiscoveredModel(name=name, kind=kind, description=description))
        return found

    def list_models(self) -> list[DiscoveredModel]:
        return self.deployments()

    def test(self) -> str:
        """A one-token call to the first deployment (Azure has no cheaper authenticated call),
        through the same client as calls."""
        deployments = self.deployments()
        if not deployments:
            raise ProviderError(
                "List this connection's deployments (options: deployments) to test it.",
                status=400,
                code="no_deployments",
                error_type="invalid_request_error",
            )
        target = next((d for d in deployments if d.kind == "chat"), deployments[0])
        payload: dict[str, Any]
        if target.kind == "embedding":
            operation, payload = "embeddings", {"input": "ping"}
        else:
            operation = "chat/completions"
            payload = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        url = self._url(target.name, operation)

        async def work(client: http.Client) -> None:
            await self._send(url, payload, stream=False)

        self._pool.run(work, url)
        return f"Connected: deployment {target.name!r} answered."
