# Meshgate developer commands. `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
SIM_PORT ?= 8001
export MESHGATE_ALLOW_PRIVATE_UPSTREAMS ?= true
# The demo connection points at the simulator `make run` starts, wherever SIM_PORT puts it.
export MESHGATE_SIMULATOR_URL ?= http://$(HOST):$(SIM_PORT)

.PHONY: install run test mutate browser lint format check bench bench-doors bench-ops bench-peers bench-ab bench-ab-redis bench-audit-partitions keys demo clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# Optional extra for local Hugging Face models. torch==2.13.0 first and explicitly: that CPU
# build lies on this machine's disk; any other spec would download a multi-GB CUDA build.
$(VENV)/.installed-local: requirements-local.txt | $(VENV)/.installed
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements-local.txt
	touch $@

.PHONY: install-local
install-local: $(VENV)/.installed-local

# Development secrets, generated once into var/ (git-ignored), never hard-coded.
var/secret.key var/encryption.keys: | $(VENV)/.installed
	mkdir -p var
	test -s var/secret.key || $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret.key
	test -s var/encryption.keys || $(PY) -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" > var/encryption.keys
	chmod 600 var/secret.key var/encryption.keys

keys: var/secret.key var/encryption.keys

# Migrate, seed the demo (idempotent), then serve the gateway and the provider simulator.
run: install keys
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py serve --host $(HOST) --port $(PORT) --simulator-port $(SIM_PORT)

# Debian's Chromium for the playground's browser tests (Playwright drives it, never downloads one).
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "make browser: /usr/bin/chromium is missing and apt-get cannot install it" >&2

# The suite covers local models too, so it installs the extra (`make run` stays light).
# With DATABASE_URL set, one run on that database. Without it, the suite runs on SQLite, then
# again on PostgreSQL + Redis when both answer on their default local addresses (the production
# audit writer and the Redis quota scripts are tested only there). TEST_POSTGRES=required makes
# their absence an error (CI), TEST_POSTGRES=no skips that run.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_POSTGRES ?= auto
test: install install-local keys browser
ifdef DATABASE_URL
	$(VENV)/bin/pytest $(PYTEST_ARGS)
else
	@status=0; \
	echo "== test suite on SQLite (embedded default)"; \
	$(VENV)/bin/pytest $(PYTEST_ARGS) || status=1; \
	if [ "$(TEST_POSTGRES)" = no ]; then \
	  echo "make test: TEST_POSTGRES=no, so no run on PostgreSQL + Redis"; \
	elif pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null \
	  && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then \
	  echo "== test suite on PostgreSQL + Redis ($(TEST_DATABASE_URL), $(TEST_REDIS_URL))"; \
	  DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	    $(VENV)/bin/pytest --create-db $(PYTEST_ARGS) || status=1; \
	elif [ "$(TEST_POSTGRES)" = required ]; then \
	  echo "make test: PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) does not answer" >&2; \
	  status=1; \
	else \
	  echo "make test: PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) does not answer:" \
	    "the suite ran on SQLite only"; \
	fi; \
	exit $$status
endif

# Mutation testing of the security- and money-critical modules (cosmic-ray; see docs/MUTATION.md).
# `make mutate MUTATE_ARGS="cost redaction"` for some of them. Slow: not part of `make test`.
mutate: install keys
	$(PY) mutation/run.py $(MUTATE_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check: install keys
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py check

bench: install keys
	$(PY) bench/overhead.py

# What operations cost (issue 22): metrics and call lines on (as shipped), off, every call
# traced, and two workers on one port, side by side; plus one call's recording alone.
bench-ops: install keys
	$(PY) bench/metrics_observe.py
	$(PY) bench/overhead.py --variants postgres,postgres+bare,postgres+traced,postgres+2w $(BENCH_ARGS)

# What each API door (legacy completions, Messages, Responses) adds beside chat, at concurrency 1.
bench-doors: install keys
	$(PY) bench/doors.py $(BENCH_ARGS)

# Meshgate beside LiteLLM's proxy under wrk (issue 9): installs LiteLLM into bench/.venv-litellm
# and wrk if missing, writes bench/RESULTS.md. `make bench-peers BENCH_ARGS=--quick` for a smoke run.
bench-peers: install keys
	$(PY) bench/peers.py $(BENCH_ARGS)

# Each home-made mechanism against its library, A/B alternated through the whole gateway (issue 17).
bench-ab: install keys
	$(PY) bench/ab.py $(BENCH_ARGS)

# Quotas' Redis client, home-made against redis-py + hiredis, alternating runs (issue 17; figures
# in docs/PERFORMANCE.md). `make bench-ab-redis BENCH_ARGS='--rounds 5 --stream'`.
bench-ab-redis: install keys
	$(PY) bench/ab_redis.py $(BENCH_ARGS)

# The call table partitioned by month at 50M records generated in PostgreSQL (issue 22): the
# admin changelist, CSV export, roll-up and retention. Needs ~35 GB of disk at the default;
# `make bench-audit-partitions BENCH_ARGS='--records 200000'` for a quick run.
bench-audit-partitions: install keys
	$(PY) bench/audit_partitions.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
