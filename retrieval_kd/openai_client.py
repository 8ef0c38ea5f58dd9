"""A minimal client for OpenAI-compatible servers (vLLM, llama.cpp server, ...): JSON calls with
retries, and the served model's id. Standard library only (urllib)."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from retrieval_kd.errors import RkdError
from retrieval_kd.redact import redact, redact_url, register_secret, split_userinfo


class OpenAIClient:
    """``request`` one JSON call; connection errors, 429 and 5xx are retried with exponential
    backoff. ``base_url`` may end in ``/v1`` or not.

    Credentials: ``user:password@`` in ``base_url`` is sent as HTTP basic auth, else ``api_key``
    (default ``$OPENAI_API_KEY``) as a bearer token. ``api`` (what messages show) is the URL
    without them, and every message is redacted (retrieval_kd/redact.py); the key goes into the
    request's header only."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60,
                 retries: int = 4, backoff: float = 0.5) -> None:
        base = base_url.rstrip("/")
        api = base if base.endswith("/v1") else base + "/v1"
        self._url, userinfo = split_userinfo(api)  # what is called: no credentials in it
        self.api = redact_url(api)  # what messages show
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._auth = None
        if userinfo is not None:  # user:password@ in the URL: HTTP basic auth, as a browser would
            user, password = userinfo
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth = f"Basic {token}"
            register_secret(password or user)
            register_secret(token)
        elif api_key:
            self._auth = f"Bearer {api_key}"
            register_secret(api_key)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url, shown = self._url + path, self.api + path
        headers = {"Content-Type": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
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
                problem = redact(f"HTTP {e.code}: {detail}")
                if e.code != 429 and e.code < 500:
                    raise RkdError(f"{shown}: {problem}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                problem = redact(getattr(e, "reason", e))
            except json.JSONDecodeError as e:
                raise RkdError(f"{shown}: response is not JSON ({e})") from None
        raise RkdError(f"{shown}: {problem} (gave up after {self.retries + 1} attempts)")

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
