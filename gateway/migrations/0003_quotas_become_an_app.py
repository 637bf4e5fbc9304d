"""Quotas and rate limits now belong to the quotas app: gateway forgets them in its state only.

The tables stay (quotas.models names them with db_table); nothing is run on the database.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0002_quotas'),
        ('quotas', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name='quota',
                    name='api_key',
                ),
                migrations.RemoveField(
                    model_name='quota',
                    name='connection',
                ),
                migrations.RemoveField(
                    model_name='quota',
                    name='department',
                ),
                migrations.RemoveField(
                    model_name='quota',
                    name='llm',
                ),
                migrations.RemoveField(
                    model_name='quota',
                    name='user',
                ),
                migrations.RemoveField(
                    model_name='quotaalert',
                    name='quota',
                ),
                migrations.RemoveField(
                    model_name='ratelimit',
                    name='api_key',
                ),
                migrations.RemoveField(
                    model_name='ratelimit',
                    name='department',
                ),
                migrations.RemoveField(
                    model_name='ratelimit',
                    name='llm',
                ),
                migrations.DeleteModel(
                    name='QuotaCounter',
                ),
                migrations.DeleteModel(
                    name='Quota',
                ),
                migrations.DeleteModel(
                    name='QuotaAlert',
                ),
                migrations.DeleteModel(
                    name='RateLimit',
                ),
            ],
            database_operations=[],
        ),
    ]
