"""Mechanism below the apps: transport pieces behind small typed interfaces.

Nothing here knows of LLMs, API keys, departments or records. The apps plug their
policy in (which address may be dialled, which statements a record is written with);
these modules move bytes. `mypy --strict` checks this package.
"""
