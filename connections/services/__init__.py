"""State changes of what can be called: connections, their secrets and models, grants, aliases,
departments and who may see them, encryption keys.

Every service is keyword-only and records a `ChangeEvent` with the acting user in
the same transaction as the change. Secrets are write-only: events name the
field that was replaced, never its value. Import them from here
(`from connections import services`); the modules are an internal split.
"""

from __future__ import annotations

from ._common import CONNECTION_FIELDS, LLM_FIELDS, USE_LLM, change_record
from .access import (
    ACCESSES,
    EVERY_DEPARTMENT,
    department_access_global_holders,
    department_access_grant,
    department_access_holders,
    department_access_revoke,
    department_access_set,
    department_llms,
    department_member_add,
    department_member_remove,
    department_members,
    permission_label,
    permissions_set,
    user_groups_set,
)
from .aliases import alias_create, alias_delete, alias_set_targets, alias_update
from .connections import (
    connection_create,
    connection_delete,
    connection_set_secrets,
    connection_update,
    encryption_key_rotate,
)
from .departments import department_create, department_delete, department_update
from .discovery import (
    UNREADABLE,
    DiscoveryResult,
    TestResult,
    connection_test,
    models_discover,
    scrub,
)
from .llms import (
    llm_approve,
    llm_create,
    llm_delete,
    llm_grant,
    llm_groups,
    llm_revoke,
    llm_set_groups,
    llm_update,
    llm_withdraw,
)

__all__ = [
    "ACCESSES",
    "CONNECTION_FIELDS",
    "EVERY_DEPARTMENT",
    "LLM_FIELDS",
    "UNREADABLE",
    "USE_LLM",
    "DiscoveryResult",
    "TestResult",
    "alias_create",
    "alias_delete",
    "alias_set_targets",
    "alias_update",
    "change_record",
    "connection_create",
    "connection_delete",
    "connection_set_secrets",
    "connection_test",
    "connection_update",
    "department_access_global_holders",
    "department_access_grant",
    "department_access_holders",
    "department_access_revoke",
    "department_access_set",
    "department_create",
    "department_delete",
    "department_llms",
    "department_member_add",
    "department_member_remove",
    "department_members",
    "department_update",
    "encryption_key_rotate",
    "llm_approve",
    "llm_create",
    "llm_delete",
    "llm_grant",
    "llm_groups",
    "llm_revoke",
    "llm_set_groups",
    "llm_update",
    "llm_withdraw",
    "models_discover",
    "permission_label",
    "permissions_set",
    "scrub",
    "user_groups_set",
]
