from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit and chargeback"

    def ready(self) -> None:
        # The chargeback and usage admin lives beside audit/admin.py, in its own module.
        from . import admin_reports  # noqa: F401
        from .trail import connect_signals

        connect_signals()
        post_migrate.connect(_partitions_ahead, sender=self)


def _partitions_ahead(sender, using: str = "default", **kwargs) -> None:
    """`migrate` (run at each deploy) makes the call table's partitions ahead too: a deploy
    without Celery beat (the embedded default) still gets them. PostgreSQL only."""
    from django.conf import settings
    from django.db import connections

    if connections[using].vendor != "postgresql" or using != "default":
        return
    from .partitions import partitions_ensure

    partitions_ensure(ahead=settings.MESHGATE_AUDIT_PARTITIONS_AHEAD)
