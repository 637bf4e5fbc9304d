"""Provider adapters, chosen by connection kind. Adding a provider is one module and one line."""

from __future__ import annotations

from importlib import import_module

from .base import Adapter, ConnectionConfig, ProviderError

REGISTRY: dict[str, str] = {
    "openai": "connections.providers.openai:OpenAIAdapter",
    "openai_compatible": "connections.providers.openai:OpenAICompatibleAdapter",
    "azure_openai": "connections.providers.azure:AzureOpenAIAdapter",
    "bedrock": "connections.providers.bedrock:BedrockAdapter",
    "huggingface_local": "connections.providers.huggingface:HuggingFaceLocalAdapter",
}


def adapter_class(kind: str) -> type[Adapter]:
    found = _classes.get(kind)
    if found is not None:
        return found  # every call asks: an import_module each time cost ~10 µs
    try:
        module_name, class_name = REGISTRY[kind].split(":")
    except KeyError:
        raise ProviderError(f"Unknown connection kind {kind!r}.", status=500)
    found = _classes[kind] = getattr(import_module(module_name), class_name)
    return found


_classes: dict[str, type[Adapter]] = {}


def build_adapter(config: ConnectionConfig) -> Adapter:
    return adapter_class(config.kind)(config)


__all__ = [
    "REGISTRY",
    "Adapter",
    "ConnectionConfig",
    "ProviderError",
    "adapter_class",
    "build_adapter",
]
