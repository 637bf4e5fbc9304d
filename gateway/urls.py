"""`/keys/`: the "My API keys" page."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "gateway"

urlpatterns = [
    path("", views.my_keys, name="my-keys"),
    path("<int:pk>/revoke/", views.revoke_key, name="revoke-key"),
]
