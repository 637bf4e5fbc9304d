from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "quotas"
    verbose_name = "Quotas and rate limits"

    def ready(self) -> None:
        from . import admin, runtime, signals  # noqa: F401

        runtime.start()
