"""`manage.py create_api_key`: the key alone on stdout, errors on stderr with a non-zero exit."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.management.commands.create_api_key import Command
from gateway.models import ApiKey, hash_key


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_prints_the_key_alone_and_stores_only_its_hash(cast):
    out, err = run("--user", "alice", "--department", "Marketing", "--purpose", "cron job")
    raw = out.strip()
    assert out == raw + "\n" and err == ""
    key = ApiKey.objects.get()
    assert key.key_hash == hash_key(raw)
    assert (key.owner, key.department, key.purpose) == (cast.alice, cast.marketing, "cron job")
    assert key.expires_at is None


def test_the_department_may_be_given_by_cost_center_with_an_expiry(cast):
    out, _ = run(
        "--user", "bob", "--department", "FIN-200", "--purpose", "batch", "--expires", "30"
    )
    key = ApiKey.objects.get()
    assert key.department == cast.finance and key.key_hash == hash_key(out.strip())
    assert 29 <= (key.expires_at - key.created_at).days <= 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody", "--department", "Marketing", "--purpose", "p"], "No active user"),
        (["--user", "alice", "--department", "Nowhere", "--purpose", "p"], "No department"),
        (["--user", "alice", "--department", "Finance", "--purpose", "p"], "not a member"),
        (["--user", "alice", "--department", "Marketing", "--purpose", "  "], "purpose"),
    ],
)
def test_it_refuses_bad_arguments_and_creates_no_key(cast, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody", "--department", "Marketing", "--purpose", "p"], "No active user"),
        (["--user", "alice", "--department", "Marketing", "--purpose", "p", "--expires", "0"], ""),
        (["--user", "alice", "--department", "Marketing"], "--purpose"),
    ],
)
def test_errors_go_to_stderr_with_a_non_zero_exit(cast, capsys, args, message):
    """Run as manage.py does (run_from_argv): exit status and streams as a shell sees them.

    run_from_argv closes the database connections when it ends, so nothing is read after it.
    """
    with pytest.raises(SystemExit) as exit_info:
        Command().run_from_argv(["manage.py", "create_api_key", *args])
    assert exit_info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
