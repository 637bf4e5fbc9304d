"""The "My API keys" page: people create and revoke their own keys."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from .forms import MyApiKeyForm
from .keys import apikey_create, apikey_revoke
from .models import ApiKey


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def my_keys(request: HttpRequest) -> HttpResponse:
    form = MyApiKeyForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            api_key, raw_key = apikey_create(
                owner=request.user,
                department=form.cleaned_data["department"],
                purpose=form.cleaned_data["purpose"],
                expires_at=form.expires_at(),
                actor=request.user,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            # Rendered straight away, never redirected to or put in a message: reloading
            # this page cannot show the key again, and no_cache keeps it out of caches.
            return render(
                request, "gateway/key_created.html", {"api_key": api_key, "raw_key": raw_key}
            )
    keys = ApiKey.objects.filter(owner=request.user).select_related("department__group")
    return render(
        request,
        "gateway/my_keys.html",
        {
            "form": form,
            "keys": keys,
            "has_departments": form.fields["department"].queryset.exists(),
        },
    )


@login_required
@require_POST
def revoke_key(request: HttpRequest, pk: int) -> HttpResponse:
    # Someone else's key is a 404, exactly like a key that does not exist.
    api_key = get_object_or_404(ApiKey, pk=pk, owner=request.user)
    apikey_revoke(api_key=api_key, actor=request.user)
    messages.success(request, f"Key {api_key.prefix}… is revoked.")
    return redirect("gateway:my-keys")
