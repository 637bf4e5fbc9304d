"""The settings helpers fail loudly on bad values, and the defaults run a fresh clone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from meshsite import settings as s

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(monkeypatch):
    return monkeypatch


def test_booleans_accept_the_usual_words_and_refuse_others(env):
    env.setenv("X_FLAG", "yes")
    assert s.env_bool("X_FLAG") is True
    env.setenv("X_FLAG", "off")
    assert s.env_bool("X_FLAG", True) is False
    env.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        s.env_bool("X_FLAG")


def test_integers_refuse_garbage_and_values_below_the_minimum(env):
    env.setenv("X_INT", "12")
    assert s.env_int("X_INT", 1) == 12
    env.setenv("X_INT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_INT"):
        s.env_int("X_INT", 1)
    env.setenv("X_INT", "-3")
    with pytest.raises(ImproperlyConfigured, match="at least"):
        s.env_int("X_INT", 1, minimum=0)


def test_a_secret_can_come_from_a_file_but_not_from_both(env, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    env.setenv("X_SECRET_FILE", str(secret_file))
    assert s.env_str("X_SECRET") == "from-a-file"
    env.setenv("X_SECRET", "inline")
    with pytest.raises(ImproperlyConfigured, match="not both"):
        s.env_str("X_SECRET")


def test_an_unreadable_secret_file_is_a_clear_error(env, tmp_path):
    env.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot read"):
        s.env_str("X_SECRET")


def test_database_urls_are_parsed_for_postgresql():
    db = s.parse_database_url("postgres://meshgate:p%40ss@db.internal:6432/mesh?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"]) == ("mesh", "meshgate", "p@ss")
    assert (db["HOST"], db["PORT"], db["OPTIONS"]) == (
        "db.internal",
        "6432",
        {"sslmode": "require"},
    )
    with pytest.raises(ImproperlyConfigured, match="unsupported"):
        s.parse_database_url("mysql://root@localhost/x")


def _check(extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MESHGATE_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_keys_fail_loudly_without_printing_any_key(tmp_path):
    result = _check({"MESHGATE_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
    assert "make keys" in result.stderr


def test_check_deploy_is_clean_under_the_production_variables(tmp_path):
    from cryptography.fernet import Fernet

    production = {
        "MESHGATE_VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "x" * 20 + "production-like-secret-key-for-the-check-0123456789",
        "MESHGATE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DJANGO_ALLOWED_HOSTS": "meshgate.example.com",
        "MESHGATE_SSL_REDIRECT": "true",
        "MESHGATE_HSTS_SECONDS": "31536000",
        "MESHGATE_BEHIND_TLS_PROXY": "true",
    }
    result = _check(production, "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
