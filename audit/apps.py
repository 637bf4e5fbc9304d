from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit and chargeback"

    def ready(self) -> None:
        # The chargeback and usage admin lives beside audit/admin.py, in its own module.
        from . import admin_reports  # noqa: F401
        from .trail import connect_signals

        connect_signals()
