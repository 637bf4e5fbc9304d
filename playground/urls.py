from __future__ import annotations

from django.urls import path

from . import views

app_name = "playground"

urlpatterns = [
    path("", views.page, name="page"),
    path("chat/", views.chat, name="chat"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<str:request_id>/", views.run_detail, name="run"),
]
