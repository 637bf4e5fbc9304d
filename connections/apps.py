from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    verbose_name = "Connections and models"

    def ready(self) -> None:
        from . import signals  # noqa: F401
