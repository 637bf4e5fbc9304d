"""The tables gateway created (gateway 0002_quotas), taken over in state only: no SQL is run."""

import django.db.models.deletion
from decimal import Decimal
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('connections', '0004_access_and_quota_events'),
        ('gateway', '0002_quotas'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Quota',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(help_text='Shown to refused clients.', max_length=100, unique=True)),
                        ('amount', models.DecimalField(decimal_places=6, help_text='USD per period (at most 9,000,000).', max_digits=16)),
                        ('period', models.CharField(choices=[('month', 'Calendar month (UTC)'), ('week', 'Calendar week (UTC, from Monday)'), ('day', 'Calendar day (UTC)'), ('rolling', 'Rolling N days')], default='month', max_length=10)),
                        ('rolling_days', models.PositiveSmallIntegerField(blank=True, help_text='Window length for a rolling period.', null=True)),
                        ('mode', models.CharField(choices=[('block', 'Block calls past the amount'), ('alert', 'Alert only')], default='block', max_length=10)),
                        ('alert_thresholds', models.JSONField(blank=True, default=list, help_text='Percentages that send an e-mail, e.g. [50, 80, 100].')),
                        ('is_catch_all', models.BooleanField(default=False, help_text='Matches only calls that no other active quota matches.')),
                        ('is_active', models.BooleanField(default=True)),
                        ('purpose', models.CharField(blank=True, max_length=200)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='quotas', to='gateway.apikey')),
                        ('connection', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='connections.connection')),
                        ('department', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='connections.department')),
                        ('llm', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='connections.llm')),
                        ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'gateway_quota',
                        'ordering': ['name'],
                    },
                ),
                migrations.CreateModel(
                    name='QuotaAlert',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('period_start', models.DateTimeField()),
                        ('threshold', models.PositiveSmallIntegerField()),
                        ('spent', models.DecimalField(decimal_places=10, default=Decimal('0'), max_digits=18)),
                        ('sent_at', models.DateTimeField(auto_now_add=True)),
                        ('quota', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='alerts', to='quotas.quota')),
                    ],
                    options={
                        'db_table': 'gateway_quotaalert',
                        'ordering': ['-sent_at'],
                    },
                ),
                migrations.CreateModel(
                    name='QuotaCounter',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('period_start', models.DateTimeField()),
                        ('spent', models.DecimalField(decimal_places=10, default=Decimal('0'), max_digits=18)),
                        ('reserved', models.DecimalField(decimal_places=10, default=Decimal('0'), max_digits=18)),
                        ('seeded_at', models.DateTimeField(blank=True, null=True)),
                        ('quota', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='counters', to='quotas.quota')),
                    ],
                    options={
                        'db_table': 'gateway_quotacounter',
                    },
                ),
                migrations.CreateModel(
                    name='RateLimit',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(help_text='Shown to refused clients.', max_length=100, unique=True)),
                        ('scope', models.CharField(choices=[('api_key', 'Per API key'), ('department', 'Per department'), ('llm', 'Per LLM')], max_length=12)),
                        ('requests_per_minute', models.PositiveIntegerField(blank=True, null=True)),
                        ('tokens_per_minute', models.PositiveIntegerField(blank=True, null=True)),
                        ('is_active', models.BooleanField(default=True)),
                        ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='rate_limits', to='gateway.apikey')),
                        ('department', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='connections.department')),
                        ('llm', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='connections.llm')),
                    ],
                    options={
                        'db_table': 'gateway_ratelimit',
                        'ordering': ['name'],
                    },
                ),
                migrations.AddConstraint(
                    model_name='quota',
                    constraint=models.UniqueConstraint(condition=models.Q(('is_catch_all', True)), fields=('is_catch_all',), name='quota_one_catch_all'),
                ),
                migrations.AddConstraint(
                    model_name='quotaalert',
                    constraint=models.UniqueConstraint(fields=('quota', 'period_start', 'threshold'), name='quota_alert_once'),
                ),
                migrations.AddConstraint(
                    model_name='quotacounter',
                    constraint=models.UniqueConstraint(fields=('quota', 'period_start'), name='quota_counter_unique'),
                ),
            ],
            database_operations=[],
        ),
    ]
