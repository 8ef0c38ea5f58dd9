"""A minimal client for OpenAI-compatible servers (vLLM, llama.cpp server, ...): JSON calls with
retries, and the served model's id. Standard library only (urllib)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from retrieval_kd.errors import RkdError


class OpenAIClient:
    """``request`` one JSON call; connection errors, 429 and 5xx are retried with exponential
    backoff. ``base_url`` may end in ``/v1`` or not."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60,
                 retries: int = 4, backoff: float = 0.5) -> None:
        base = base_url.rstrip("/")
        self.api = base if base.endswith("/v1") else base + "/v1"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.api + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                problem = f"HTTP {e.code}: {detail}"
                if e.code != 429 and e.code < 500:
                    raise RkdError(f"{url}: {problem}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                problem = str(getattr(e, "reason", e))
            except json.JSONDecodeError as e:
                raise RkdError(f"{url}: response is not JSON ({e})") from None
        raise RkdError(f"{url}: {problem} (gave up after {self.retries + 1} attempts)")

    def served_model(self, model: str | None, request=None) -> str:
        """The server's id for ``model``: itself if listed (or nothing is listed), else the one
        model served (llama.cpp serves its model under the file's path); ``model`` None takes
        the one model served. ``request``: the call to use (default ``self.request``)."""
        request = request or self.request
        try:
            ids = [m.get("id") for m in request("GET", "/models").get("data", [])]
        except RkdError as e:
            if "HTTP 404" not in str(e) or model is None:
                raise
            return model  # no model listing: trust the name given
        if model is not None and (model in ids or not ids):
            return model
        if len(ids) == 1:
            return ids[0]
        served = ", ".join(map(str, ids)) or "no model"
        if model is None:
            raise RkdError(f"{self.api}/models serves {served}: name one with --model")
        raise RkdError(f"{self.api}/models: '{model}' is not served (served: {served})")
