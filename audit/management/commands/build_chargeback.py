"""Build a new current version of every department's chargeback report for a month."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit import services, tasks


class Command(BaseCommand):
    help = "Build chargeback reports for MONTH (YYYY-MM), rolling its usage up again first."

    def add_arguments(self, parser) -> None:
        parser.add_argument("month", help="YYYY-MM")
        parser.add_argument("--queue", action="store_true", help="enqueue for a Celery worker")

    def handle(self, *args, **options) -> None:
        try:
            month = services.parse_month(options["month"])
        except ValueError:
            raise CommandError(f"Not a month (YYYY-MM): {options['month']!r}")
        if options["queue"]:
            tasks.build_chargeback.delay(f"{month:%Y-%m}")
            self.stdout.write(f"Queued chargeback for {month:%Y-%m}.")
            return
        result = services.chargeback_build(month=month)
        for report in result.reports:
            self.stdout.write(
                f"{report.department_name} ({report.cost_center}) v{report.version}: "
                f"{report.requests} calls, {report.total_cost:.2f} USD"
            )
        if result.unassigned_cost:
            self.stderr.write(
                f"Calls with no department cost {result.unassigned_cost} USD: they should not."
            )
