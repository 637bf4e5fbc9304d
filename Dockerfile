# syntax=docker/dockerfile:1
# Meshgate's image: one image for the gateway, the Celery worker and Celery beat (their
# commands differ; see deploy/compose.yaml and deploy/k8s/). Multi-stage: compilers and
# headers stay in the build stage; the final image holds the virtualenv, the code and the
# collected static files, and runs as an unprivileged user.

FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt
WORKDIR /app
COPY . /app
RUN rm -rf .venv var bench mutation .git \
    && DJANGO_SECRET_KEY=collectstatic-only MESHGATE_ENCRYPTION_KEYS=Y29sbGVjdHN0YXRpYy1vbmx5LW5vdC1hLWtleS0xMjM= \
       /opt/venv/bin/python manage.py collectstatic --noinput --verbosity 0 \
    && /opt/venv/bin/python -m compileall -q /app

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 meshgate \
    && useradd --system --uid 10001 --gid meshgate --home-dir /app --shell /usr/sbin/nologin meshgate
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
RUN mkdir -p /app/var && chown meshgate:meshgate /app/var
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=meshsite.settings \
    MESHGATE_VAR_DIR=/app/var \
    MESHGATE_METRICS_DIR=/app/var/metrics \
    MESHGATE_LOG_FORMAT=json \
    MESHGATE_WORKERS=4
USER meshgate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# N uvicorn workers on one port (MESHGATE_WORKERS); no demo simulator, Celery runs apart.
CMD ["sh", "-c", "exec python manage.py serve --host 0.0.0.0 --port 8000 --workers ${MESHGATE_WORKERS} --simulator-port 0 --no-celery"]
