"""The admin of what can be called. Every save goes through `connections.services`, so each
change is recorded as a ChangeEvent with the acting user."""

from . import connection, llm, other, people  # noqa: F401
