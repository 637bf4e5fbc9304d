from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from . import lastused, responses_store, runtime, signals  # noqa: F401

        lastused.register()
        responses_store.register()
        runtime.start()  # the process's keys, catalog and adapters (gateway/runtime.py)
