"""The call table's monthly partitions (PostgreSQL): list them, make them ahead, expire."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from audit import partitions, retention


class Command(BaseCommand):
    help = (
        "Create the call table's partitions for this month and the months ahead, split the "
        "default partition's rows into partitions of their own months, and list them. "
        "--expire also removes the records past MESHGATE_AUDIT_KEEP_MONTHS (as the daily task)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--ahead",
            type=int,
            default=settings.MESHGATE_AUDIT_PARTITIONS_AHEAD,
            help="months ahead (default: MESHGATE_AUDIT_PARTITIONS_AHEAD)",
        )
        parser.add_argument("--expire", action="store_true", help="apply the records' retention")

    def handle(self, *args, **options) -> None:
        if not partitions.is_partitioned():
            self.stdout.write("The call table is not partitioned (SQLite, or not migrated).")
        else:
            for name in partitions.partitions_ensure(ahead=max(0, options["ahead"])):
                self.stdout.write(f"created {name}")
            for partition in partitions.partitions():
                month = f"{partition.month:%Y-%m}" if partition.month else "DEFAULT"
                self.stdout.write(f"{month}  {partition.name}")
        if options["expire"]:
            expired = retention.call_records_expire()
            if expired.cutoff is None:
                self.stdout.write("MESHGATE_AUDIT_KEEP_MONTHS is 0: records are kept for ever.")
                return
            for name in expired.partitions:
                self.stdout.write(f"{settings.MESHGATE_AUDIT_EXPIRED_PARTITIONS} {name}")
            self.stdout.write(
                f"Records before {expired.cutoff:%Y-%m-%d} removed: {len(expired.partitions)} "
                f"partition(s), {expired.rows} row(s) one by one."
            )
