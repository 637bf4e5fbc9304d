"""Log lines as text or JSON (MESHGATE_LOG_FORMAT): a call line's fields, either way."""

from __future__ import annotations

import json
import logging

from meshsite.logfilters import JsonFormatter, TextFormatter


def record(**extra) -> logging.LogRecord:
    logger = logging.getLogger("meshgate.calls")
    return logger.makeRecord(
        "meshgate.calls", logging.INFO, __file__, 1, "call %s", ("done",), None, extra=extra
    )


def test_a_json_line_is_one_object_with_the_calls_fields():
    line = JsonFormatter().format(record(request_id="req_1", status=200, cost_usd="0.01"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "meshgate.calls"
    assert entry["message"] == "call done"
    assert entry["request_id"] == "req_1" and entry["status"] == 200
    assert entry["time"].endswith("Z")


def test_a_json_line_carries_its_traceback_and_escapes_newlines():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = record()
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in entry["exception"]


def test_a_text_line_appends_the_fields_as_name_value():
    line = TextFormatter().format(record(request_id="req_1", status=200))
    assert line.endswith("INFO meshgate.calls call done request_id=req_1 status=200")
    plain = TextFormatter().format(record())
    assert plain.endswith("INFO meshgate.calls call done")
