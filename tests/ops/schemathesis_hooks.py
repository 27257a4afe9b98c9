"""Schemathesis hooks for the suite's run against docs/openapi.yaml (tests/ops/openapi.rs).

- Plain-text bodies are validated too: ringlock's lock answers are text/plain (`OK`,
  `ERR ...`), and the spec gives each its exact values; schemathesis checks only the media
  types it can read, so this reads text/plain as the string it is.
- A generated `wait` (seconds an acquire may wait for a busy lock, up to a day) is cut to
  50 ms, so that the run stays bounded in time; what is tested is the answer, not the wait.
"""

import schemathesis

MAX_WAIT_SECONDS = 0.05


@schemathesis.deserializer("text/plain")
def plain_text(ctx, response):
    return response.content.decode("utf-8")


@schemathesis.hook
def before_call(ctx, case, kwargs):
    body = case.body
    if isinstance(body, dict):
        wait = body.get("wait")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > MAX_WAIT_SECONDS:
            body["wait"] = MAX_WAIT_SECONDS
