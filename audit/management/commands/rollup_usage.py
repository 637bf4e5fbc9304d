"""Recompute usage roll-ups for a range of UTC days, now or through the Celery queue."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from audit import services, tasks


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"Not a date (YYYY-MM-DD): {value!r}")


class Command(BaseCommand):
    help = "Recompute usage roll-ups from the audit trail for FIRST..LAST (UTC days, inclusive)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("first", help="first day, YYYY-MM-DD")
        parser.add_argument("last", nargs="?", help="last day, YYYY-MM-DD (default: first)")
        parser.add_argument("--queue", action="store_true", help="enqueue for a Celery worker")

    def handle(self, *args, **options) -> None:
        first = _date(options["first"])
        last = _date(options["last"]) if options["last"] else first
        if last < first:
            raise CommandError("The range ends before it starts.")
        if options["queue"]:
            tasks.rollup_usage_range.delay(first.isoformat(), last.isoformat())
            self.stdout.write(f"Queued roll-ups for {first}..{last}.")
            return
        results = services.usage_rollup_range(first=first, last=last)
        groups = sum(result.groups for result in results)
        self.stdout.write(f"Rolled up {len(results)} day(s): {groups} group row(s).")
