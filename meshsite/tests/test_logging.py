"""What the logs say about ordinary refusals."""

from __future__ import annotations

import logging

import pytest
from django.test import Client


@pytest.mark.django_db
def test_an_admin_403_logs_one_line_not_a_traceback(cast, caplog):
    cast.alice.is_staff = True  # may enter the admin, may not add API keys for others
    cast.alice.save()
    client = Client()
    client.force_login(cast.alice)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/admin/gateway/apikey/add/")
    assert response.status_code == 403
    refusals = [r for r in caplog.records if r.name == "django.request"]
    assert len(refusals) == 1
    text = logging.Formatter("%(levelname)s %(name)s %(message)s").format(refusals[0])
    assert "Forbidden" in text and "Traceback" not in text
    assert "\n" not in text
