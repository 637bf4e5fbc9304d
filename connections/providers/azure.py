"""Azure OpenAI: the OpenAI wire protocol on deployment URLs, with an `api-key` header.

The base URL is the resource endpoint (`https://<resource>.openai.azure.com`); the
model name of an LLM is its deployment name. Discovery lists the deployments an
administrator entered in `options["deployments"]` (names, or objects with
`name`, `model` and `kind`), since listing them needs Azure management rights a
gateway should not hold.
"""

from __future__ import annotations

from urllib.parse import quote

import openai

from .addresses import guarded_httpx_client
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

    def _azure_sdk(self) -> openai.AzureOpenAI:
        return openai.AzureOpenAI(
            api_key=self.config.secrets.get("api_key") or "no-key",
            azure_endpoint=self.base_url,
            api_version=self.api_version,
            timeout=self.config.timeout_seconds,
            max_retries=0,
            http_client=guarded_httpx_client(),
        )

    def test(self) -> str:
        """A one-token call to the first deployment (Azure has no cheaper authenticated call)."""
        deployments = self.deployments()
        if not deployments:
            raise ProviderError(
                "List this connection's deployments (options: deployments) to test it.",
                status=400,
                code="no_deployments",
                error_type="invalid_request_error",
            )
        target = next((d for d in deployments if d.kind == "chat"), deployments[0])
        client = self._azure_sdk()
        try:
            if target.kind == "embedding":
                client.embeddings.create(model=target.name, input="ping")
            else:
                client.chat.completions.create(
                    model=target.name,
                    messages=[{"role": "user", "content": "ping"}],
                    max_tokens=1,
                )
        except openai.OpenAIError as exc:
            raise self.sdk_error(exc)
        return f"Connected: deployment {target.name!r} answered."
