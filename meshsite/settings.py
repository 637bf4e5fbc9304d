"""Meshgate settings: one file, configured by environment variables.

Every variable is read through a small typed helper that fails loudly on a bad
value. Secrets may come from ``NAME_FILE`` instead of ``NAME``. With nothing
set, Meshgate runs on SQLite, a local-memory cache and eager Celery tasks, with
its development keys in ``var/`` (created by ``make run``/``make test``, never
committed). ``.env.example`` lists every variable.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MESHGATE_VAR_DIR", BASE_DIR / "var"))


# --- typed environment helpers -------------------------------------------------------------


def env_str(name: str, default: str | None = None) -> str | None:
    """NAME, or the contents of the file named by NAME_FILE, or the default."""
    value = os.environ.get(name)
    file_name = os.environ.get(f"{name}_FILE")
    if value is not None and file_name is not None:
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both.")
    if file_name is not None:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc.strerror}")
    return value if value is not None else default


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {value!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}.")
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}.")
    return number


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = env_str(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def _dev_file(name: str) -> str | None:
    """A development secret generated into var/ by the Makefile, if present."""
    path = VAR_DIR / name
    return path.read_text().strip() if path.exists() else None


def parse_database_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        options = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": env_int("MESHGATE_DB_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path) or ":memory:"}
    raise ImproperlyConfigured(f"DATABASE_URL: unsupported scheme {parts.scheme!r}.")


# --- core ------------------------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or _dev_file("secret.key")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set; for development run `make keys`."
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# Fernet keys for provider secrets: comma-separated, the first one is primary.
MESHGATE_ENCRYPTION_KEYS = env_list("MESHGATE_ENCRYPTION_KEYS") or [
    key for key in (_dev_file("encryption.keys") or "").split(",") if key
]
if not MESHGATE_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "MESHGATE_ENCRYPTION_KEYS (or MESHGATE_ENCRYPTION_KEYS_FILE) is not set; "
        "for development run `make keys`."
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc assets served locally, no CDN
    "guardian",
    "connections",
    "gateway",
    "quotas",
    "audit",
    "playground",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ under uvicorn (admin, API docs, playground); /v1/ never gets here.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "meshsite.urls"
ASGI_APPLICATION = "meshsite.asgi.application"
WSGI_APPLICATION = "meshsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
DATABASES = {
    "default": parse_database_url(DATABASE_URL)
    if DATABASE_URL
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "meshgate.sqlite3"}
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the admin read while the gateway writes audit batches.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# Quotas' Redis client (meshsite.lib.redis): "lean" (home-made) or "redis-py" (bench A/B).
MESHGATE_REDIS_CLIENT = env_str("MESHGATE_REDIS_CLIENT", "lean")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("MESHGATE_CACHE_PREFIX", "meshgate"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/playground/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
# Also straight from the apps' static folders, so a fresh clone and the tests need no collectstatic.
WHITENOISE_USE_FINDERS = True
# Before `collectstatic` STATIC_ROOT does not exist yet: that is expected, not worth a warning.
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)

# --- security (all on unless DEBUG; `check --deploy` is clean under production variables) ----

SECURE_SSL_REDIRECT = env_bool("MESHGATE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("MESHGATE_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("MESHGATE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("MESHGATE_BEHIND_TLS_PROXY", False) else None
)
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MESHGATE_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)

# --- Django REST framework ------------------------------------------------------------------

REST_FRAMEWORK = {
    # The key class first: DRF takes the first class's challenge to answer 401 (not 403)
    # to unauthenticated callers. Without an Authorization header it defers to the session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gateway.api_auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Meshgate management API",
    "DESCRIPTION": "Connections, models, aliases, API keys, usage and reports.",
    "VERSION": "1",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---------------------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("MESHGATE_TASK_SOFT_TIME_LIMIT", 600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("MESHGATE_TASK_TIME_LIMIT", 660, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("MESHGATE_TASK_VISIBILITY", 900)}
CELERY_TIMEZONE = "UTC"

# --- Meshgate -------------------------------------------------------------------------------

# Private and loopback upstream addresses (local model servers) are refused unless allowed.
MESHGATE_ALLOW_PRIVATE_UPSTREAMS = env_bool("MESHGATE_ALLOW_PRIVATE_UPSTREAMS", False)
# Extra certificate authorities (a PEM file) trusted for every upstream, besides the system's.
MESHGATE_CA_BUNDLE = env_str("MESHGATE_CA_BUNDLE", "") or ""
if MESHGATE_CA_BUNDLE and not os.path.isfile(MESHGATE_CA_BUNDLE):
    raise ImproperlyConfigured(f"MESHGATE_CA_BUNDLE: no such file {MESHGATE_CA_BUNDLE!r}")
MESHGATE_MAX_BODY_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE
MESHGATE_AUDIT_RETENTION_DAYS = env_int("MESHGATE_AUDIT_RETENTION_DAYS", 365, minimum=1)
# Call records themselves, by whole UTC months: kept for this month and that many before it,
# older months dropped (0: kept for ever). On PostgreSQL the call table is partitioned by
# month; an expired month's partition is dropped, or detached (to archive) with "detach".
MESHGATE_AUDIT_KEEP_MONTHS = env_int("MESHGATE_AUDIT_KEEP_MONTHS", 0, minimum=0)
MESHGATE_AUDIT_EXPIRED_PARTITIONS = env_str("MESHGATE_AUDIT_EXPIRED_PARTITIONS", "drop")
if MESHGATE_AUDIT_EXPIRED_PARTITIONS not in ("drop", "detach"):
    raise ImproperlyConfigured("MESHGATE_AUDIT_EXPIRED_PARTITIONS must be drop or detach.")
# Months past this one whose partitions are made ahead (daily task, migrate, on demand).
MESHGATE_AUDIT_PARTITIONS_AHEAD = env_int("MESHGATE_AUDIT_PARTITIONS_AHEAD", 3, minimum=1)
# How long a call waits for its audit record before it is refused (503, nothing sent upstream).
MESHGATE_AUDIT_WAIT_SECONDS = env_int("MESHGATE_AUDIT_WAIT_SECONDS", 10, minimum=1)
# Records of calls refused while the database was away, kept in memory until it is back.
MESHGATE_AUDIT_SPOOL_MAX = env_int("MESHGATE_AUDIT_SPOOL_MAX", 10_000, minimum=0)
MESHGATE_DEMO_PASSWORD = env_str("MESHGATE_DEMO_PASSWORD")
MESHGATE_SIMULATOR_URL = env_str("MESHGATE_SIMULATOR_URL", "http://127.0.0.1:8001")
# The demo's local Hugging Face models: seeded only where the optional extra is installed.
MESHGATE_DEMO_LOCAL_MODELS = env_bool("MESHGATE_DEMO_LOCAL_MODELS", True)
MESHGATE_DEMO_MODELS_DIR = env_str("MESHGATE_DEMO_MODELS_DIR", str(VAR_DIR / "models"))
# How long an in-process cache may serve without checking the shared version counter.
MESHGATE_CACHE_CHECK_SECONDS = float(env_str("MESHGATE_CACHE_CHECK_SECONDS", "1.0") or 1.0)
# The largest server-sent event an upstream may send; past it the stream is stopped.
MESHGATE_MAX_SSE_EVENT_BYTES = env_int("MESHGATE_MAX_SSE_EVENT_BYTES", 4 << 20, minimum=1024)
# The gateway's garbage collector: after startup, what was loaded (Django, the directory,
# adapters) is frozen out of collections, and young collections run less often, so a full
# collection over every long-lived object does not stall the loop in the middle of calls.
MESHGATE_GC_FREEZE = env_bool("MESHGATE_GC_FREEZE", True)
MESHGATE_GC_THRESHOLD = env_int("MESHGATE_GC_THRESHOLD", 50_000, minimum=700)

# Operations. Each call counted in /metrics (off only to measure what counting costs).
MESHGATE_METRICS = env_bool("MESHGATE_METRICS", True)
# /metrics answers only with `Authorization: Bearer <token>` when a token is set.
MESHGATE_METRICS_TOKEN = env_str("MESHGATE_METRICS_TOKEN")
# Where each gateway worker writes its metrics for the others to merge (several workers on
# one port need one shared directory; empty it when the server starts). Unset: one process.
MESHGATE_METRICS_DIR = env_str("MESHGATE_METRICS_DIR")
# One INFO line per call on the `meshgate.calls` logger (about 40 µs of CPU a call, see
# docs/ARCHITECTURE.md "Operations"); off: only the metrics and the trail count calls.
# Off by default: a line per call through Python's logging cost 30% of streamed requests/s
# under `make bench-peers` (docs/PERFORMANCE.md, 6 December); metrics are on by default.
MESHGATE_CALL_LOG = env_bool("MESHGATE_CALL_LOG", False)
# Every log line, a call's included: "text" or "json" (one JSON object a line).
MESHGATE_LOG_FORMAT = env_str("MESHGATE_LOG_FORMAT", "text")
if MESHGATE_LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(
        f"MESHGATE_LOG_FORMAT must be text or json, not {MESHGATE_LOG_FORMAT!r}."
    )
# Traces go out over OTLP/HTTP when the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set
# (the other OTEL_* variables, e.g. OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, are the SDK's).
MESHGATE_TRACING = bool(
    os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
) and not env_bool("OTEL_SDK_DISABLED", False)

EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "meshgate@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "meshsite.logfilters.TextFormatter"},
        "json": {"()": "meshsite.logfilters.JsonFormatter"},
    },
    "filters": {"forbidden_in_one_line": {"()": "meshsite.logfilters.ForbiddenInOneLine"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": MESHGATE_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("MESHGATE_LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "django.request": {"filters": ["forbidden_in_one_line"]},
        # Call lines follow MESHGATE_LOG_LEVEL, unless switched off alone.
        **({} if MESHGATE_CALL_LOG else {"meshgate.calls": {"level": "WARNING"}}),
    },
}
