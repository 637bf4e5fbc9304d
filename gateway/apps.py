from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from . import lastused, responses_store, signals  # noqa: F401

        lastused.register()
        responses_store.register()
