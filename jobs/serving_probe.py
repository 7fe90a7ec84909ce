"""Does the serving graph still answer? One 1-token chat completion, with a deadline.

Asked when a graph starts (the local lab) and after an AIPerf step fails (the cloud Jobs and the
local lab), so a failed step says whether the server had stopped answering. That happens: in
this project's CI a Dynamo 0.9.1 frontend over the mocker stopped delivering responses after a
concurrency-64 step (the worker finished the next requests, no client got a byte; /metrics still
answered), and every later step then failed the same way.

Standard library only: it ships in the Jobs' ConfigMap.
"""
from __future__ import annotations

import json
import urllib.request
from typing import Callable

PROBE_TIMEOUT_SECONDS = 15.0  # a 1-token reply takes milliseconds on an idle graph
PROBE_ATTEMPTS = 3  # a server draining a cancelled load may miss one; it answers a later one
SERVING_STOPPED = "serving had stopped"
# The frontend is on loopback (local lab) or an in-cluster Service: never through a proxy that
# the environment may name.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url: str, model: str, prompt: str = "ready?", timeout: float | None = None,
            max_tokens: int = 1, on_error: Callable[[Exception], None] = lambda err: None) -> bool:
    """True when `url`'s OpenAI chat endpoint returns a choice for `model` within `timeout`
    (default PROBE_TIMEOUT_SECONDS); a request that fails is handed to `on_error`."""
    body = json.dumps({"model": model, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with DIRECT.open(request, timeout=timeout or PROBE_TIMEOUT_SECONDS) as response:
            return bool(json.load(response).get("choices"))
    except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
        on_error(err)
        return False


def still_serving(url: str, model: str) -> bool:
    """Asked after a failed step: does any of PROBE_ATTEMPTS probes get an answer?"""
    return any(answers(url, model) for _ in range(PROBE_ATTEMPTS))


def stopped_answering(step: str, code: int) -> str:
    """The failure of a step after which the server answered no probe."""
    return (f"{step}: aiperf exited {code}, then the frontend answered none of "
            f"{PROBE_ATTEMPTS} 1-token requests ({PROBE_TIMEOUT_SECONDS:.0f} s each): "
            f"{SERVING_STOPPED}")
