"""One call, typed: what a request carries from its door to its record.

A door (`gateway.doors`) builds a `Call` from a client's request; the pipeline's stages
(`gateway.stages`, run by `gateway.pipeline`) fill it in turn: who calls, the targets, the
policy, the admission, the record, the attempts, the usage, the cost, the outcome; the
audit façade (`audit.record`) writes its record from it, and the door answers from it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from audit import redaction
from audit.outcome import Outcome
from connections.providers.base import Usage

from .errors import GatewayError

if TYPE_CHECKING:
    from audit.record import Opening
    from quotas.admission import Admission

    from .directory import Snapshot, Target
    from .doors import Door
    from .router import Attempts


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: an API key's owner, or a playground user (no key)."""

    user_id: int
    username: str
    department_id: int | None
    api_key_id: int | None  # None for playground calls
    api_key_prefix: str  # "" for playground calls
    purpose: str


@dataclass(slots=True)
class Reply:
    """What a door sends back: a JSON body, or a stream of SSE chunks."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | None = None  # JSON reply, or
    stream: AsyncIterator[bytes] | None = None  # SSE frames incl. the final b"data: [DONE]\n\n"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, eq=False)
class Call:
    """One request from its door to its record. The stages fill it in order."""

    request_id: str
    endpoint: str  # one of doors.ENDPOINTS, or the path of a refused request
    started: float = field(default_factory=time.monotonic)  # monotonic
    started_at: datetime = field(default_factory=now)
    # The door's: where it came from and what it asks (the internal request: OpenAI's JSON
    # shape, which the provider adapters translate from).
    client_ip: str | None = None
    user_agent: str = ""
    authorization: bytes | None = None  # the Authorization header, for `authenticate`
    traceparent: bytes | None = None  # the client's W3C traceparent header (tracing)
    body: dict[str, Any] | None = None
    door: Door | None = None  # another wire format than OpenAI's (`doors.Door`)
    door_body: dict[str, Any] | None = None  # its own request, once translated into `body`
    # authenticate
    principal: Principal | None = None
    # resolve and authorize
    snapshot: Snapshot | None = None
    alias_name: str = ""
    targets: list[Target] = field(default_factory=list)
    policy: str = redaction.FULL  # the strictest payload policy of the targets
    secrets: tuple[str, ...] = ()  # the targets' connection secrets, scrubbed from errors
    # admit
    admission: Admission | None = None  # the quota reservation, settled by `account`
    # open the record
    opening: Opening | None = None
    record_id: int | None = None
    # call upstream
    attempts: Attempts | None = None
    target: Target | None = None  # the target that answered
    usage: Usage | None = None
    response_body: Any = None  # what the record keeps of the answer (before redaction)
    first_token_at: datetime | None = None
    # account
    cost: Decimal | None = None
    # the end
    outcome: Outcome = Outcome.INTERRUPTED
    status: int = 0
    error_message: str = ""
    error_code: str = ""  # the refusal's or failure's code (`quota_unavailable`), for metrics
    ended_at: datetime | None = None
    finished: bool = False  # `pipeline.finish` ran: settled and completed once
    reply: Reply | None = None
    trace: Any = None  # gateway.tracing.CallTrace while a traced call runs

    @classmethod
    def since(cls, request_id: str, endpoint: str, started: float | None, **fields: Any) -> Call:
        """A call that began at monotonic `started` (now if None)."""
        if started is None:
            return cls(request_id, endpoint, **fields)
        begun = now() - timedelta(seconds=time.monotonic() - started)
        return cls(request_id, endpoint, started, begun, **fields)

    @property
    def recorded_endpoint(self) -> str:
        """The endpoint the record names: the door's, when it is not OpenAI's."""
        return self.door.name if self.door is not None else self.endpoint

    @property
    def streamed(self) -> bool:
        return self.body is not None and self.body.get("stream") is True

    @property
    def model_requested(self) -> str:
        model = self.body.get("model") if self.body is not None else None
        return model[:255] if isinstance(model, str) else ""

    @property
    def first_target(self) -> Target | None:
        return self.targets[0] if self.targets else None

    def end(self, outcome: Outcome, status: int, message: str = "") -> None:
        """Set how the call ended (once a stage or the pipeline knows)."""
        self.outcome, self.status, self.error_message = outcome, status, message

    def fail(self, error: GatewayError) -> None:
        self.end(error.outcome, error.status, error.message)
        self.error_code = error.code

    def latency_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


__all__ = ["Call", "Outcome", "Principal", "Reply"]
