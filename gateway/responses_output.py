"""The Responses door's answers: the `response` object, its output items, and the stream's
typed events made from chat chunks (`ResponseEvents`), for `gateway.doors_responses`."""

from __future__ import annotations

from typing import Any

import orjson


def text_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [part],
    }


def call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(message: dict[str, Any], stem: str) -> list[dict[str, Any]]:
    """A chat answer's message as Responses output items."""
    items = []
    if message.get("content"):
        items.append(text_item("msg_" + stem, message["content"]))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        items.append(
            call_item(
                f"fc_{stem}_{index}",
                call.get("id") or "",
                function.get("name") or "",
                function.get("arguments") or "",
            )
        )
    return items


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    body: dict[str, Any],
    response_id: str,
    created: int,
    output: list[dict[str, Any]],
    *,
    status: str = "completed",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `response` object, echoing the request's settings as the API does."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
        "store": body.get("store", True) is not False,
        "user": body.get("user"),
    }


def assistant_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """Output items as the chat assistant message a chain continues from."""
    text = "".join(
        p["text"] for item in output if item["type"] == "message" for p in item["content"]
    )
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item["type"] == "function_call"
    ]
    if calls:
        message["tool_calls"] = calls
    return message


class ResponseEvents:
    """Chat chunks to the Responses stream's typed events, one output item open at a time."""

    def __init__(self, body: dict[str, Any], response_id: str, created: int, stem: str) -> None:
        self.body, self.response_id, self.created, self.stem = body, response_id, created, stem
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: str | None = None  # "text" or "tool:N"
        self.status = "completed"

    def event(self, kind: str, data: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def start(self) -> bytes:
        response = response_object(
            self.body, self.response_id, self.created, [], status="in_progress"
        )
        return self.event("response.created", {"response": response}) + self.event(
            "response.in_progress", {"response": response}
        )

    def _item(self) -> tuple[int, dict[str, Any]]:
        return len(self.output) - 1, self.output[-1]

    def _begin(self, kind: str, item: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.open = kind
        self.output.append(item)
        index = len(self.output) - 1
        out.append(
            self.event(
                "response.output_item.added",
                {
                    "output_index": index,
                    "item": {**item, "content": []} if kind == "text" else item,
                },
            )
        )
        if kind == "text":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                self.event(
                    "response.content_part.added",
                    {
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "part": part,
                    },
                )
            )
        return out

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        index, item = self._item()
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index}
        out = []
        if self.open == "text":
            part = item["content"][0]
            out.append(
                self.event(
                    "response.output_text.done",
                    {**where, "content_index": 0, "text": part["text"], "logprobs": []},
                )
            )
            out.append(
                self.event(
                    "response.content_part.done", {**where, "content_index": 0, "part": part}
                )
            )
        else:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    {**where, "name": item["name"], "arguments": item["arguments"]},
                )
            )
        out.append(self.event("response.output_item.done", {"output_index": index, "item": item}))
        self.open = None
        return out

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        for choice in (chunk.get("choices") or ())[:1]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.open != "text":
                    out += self._begin(
                        "text", text_item(f"msg_{self.stem}_{len(self.output)}", "", "in_progress")
                    )
                index, item = self._item()
                item["content"][0]["text"] += delta["content"]
                where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                out.append(
                    self.event(
                        "response.output_text.delta",
                        {**where, "delta": delta["content"], "logprobs": []},
                    )
                )
            for call in delta.get("tool_calls") or ():
                key, function = f"tool:{call.get('index', 0)}", call.get("function") or {}
                if self.open != key:
                    item = call_item(
                        f"fc_{self.stem}_{len(self.output)}",
                        call.get("id") or "",
                        function.get("name") or "",
                        "",
                        "in_progress",
                    )
                    out += self._begin(key, item)
                if function.get("arguments"):
                    index, item = self._item()
                    item["arguments"] += function["arguments"]
                    where = {"item_id": item["id"], "output_index": index}
                    out.append(
                        self.event(
                            "response.function_call_arguments.delta",
                            {**where, "delta": function["arguments"]},
                        )
                    )
            if choice.get("finish_reason") == "length":
                self.status = "incomplete"
        return out

    def end(self, usage: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        out = self._close()
        response = response_object(
            self.body, self.response_id, self.created, self.output, status=self.status, usage=usage
        )
        kind = "response.completed" if self.status == "completed" else "response.incomplete"
        out.append(self.event(kind, {"response": response}))
        return b"".join(out), response

    def error(self, error: dict[str, Any]) -> bytes:
        return self.event(
            "error",
            {
                "code": error.get("code"),
                "message": error.get("message"),
                "param": error.get("param"),
            },
        )
