"""Any OpenAI-compatible chat endpoint (vLLM, TGI, Ollama, llama.cpp server) as text backend and verifier.

Requests run on a thread pool of ``max_in_flight`` workers (the bound on
concurrent requests), each with a timeout; 429, 5xx, timeouts, dropped
connections and malformed JSON are retried with exponential backoff (a
``Retry-After`` header is honoured, capped). An item that still fails is
rejected with the error's type as reason; the run goes on. The API key is sent
as a bearer header only: never logged, never written.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

from .prompts import SYSTEM, GenerativeTextBackend, GenerativeVerifier

logger = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The endpoint kept failing (status, timeout, connection, or a body that is not a chat completion)."""


class MalformedResponse(EndpointError):
    pass


class OpenAIClient:
    """A small, thread-safe chat-completions client with bounded concurrency and retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_in_flight: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_tokens: int = 64,
    ):
        import httpx

        if not base_url or not model:
            raise ValueError(
                "the openai backend needs a base URL and a model (--api_base/--api_model or "
                "OPENAI_BASE_URL/OPENAI_MODEL)"
            )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.model, self.max_in_flight, self.max_retries = model, max_in_flight, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}

    @classmethod
    def from_config(cls, cfg) -> OpenAIClient:
        return cls(
            cfg.api_base or os.environ.get("OPENAI_BASE_URL", ""),
            cfg.api_model or os.environ.get("OPENAI_MODEL", ""),
            cfg.api_key or os.environ.get("OPENAI_API_KEY"),
            cfg.max_in_flight,
            cfg.request_timeout,
            cfg.max_retries,
        )

    def chat(self, messages: list[dict]) -> str:
        """One completion's text, retried on transient failures; raises EndpointError when it gives up."""
        import httpx

        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
            try:
                resp = self._http.post(
                    "/chat/completions", json={"model": self.model, "messages": messages, **self.sampling}
                )
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last = type(err).__name__
            else:
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}"
                    retry_after = resp.headers.get("retry-after", "")
                    if retry_after.replace(".", "", 1).isdigit():
                        wait = min(self.max_backoff, float(retry_after))
                elif resp.status_code >= 400:
                    raise EndpointError(f"HTTP {resp.status_code}")  # a bad request does not get better by retrying
                else:
                    try:
                        return resp.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        last = "malformed response"
            if attempt < self.max_retries:
                logger.debug("endpoint: %s, retry %d in %.2fs", last, attempt + 1, wait)
                time.sleep(wait)
        raise (MalformedResponse if last == "malformed response" else EndpointError)(
            f"gave up after {self.max_retries + 1} tries: {last}"
        )

    def chat_many(self, conversations: list[list[dict]]) -> list:
        """Completions for many conversations, at most ``max_in_flight`` at a time; failures come back as exceptions."""

        def one(messages):
            try:
                return self.chat(messages)
            except EndpointError as err:
                return err

        with ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
            return list(pool.map(one, conversations))

    def close(self) -> None:
        self._http.close()


class OpenAITextBackend(GenerativeTextBackend):
    name = "openai"

    def __init__(self, client: OpenAIClient):
        self.client = client

    def generate(self, prompts: list[str]) -> list:
        return self.client.chat_many(
            [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}] for p in prompts]
        )


class OpenAIVerifier(GenerativeVerifier):
    """Sends the image inline (base64 JPEG data URL) with the yes/no question."""

    name = "mllm"

    def __init__(self, client: OpenAIClient):
        self.client = client

    def ask(self, jobs, questions: list[str]) -> list:
        conversations, failed = [], {}
        for i, (job, question) in enumerate(zip(jobs, questions)):
            try:
                url = _data_url(job.image_path)
            except OSError as err:
                failed[i] = err
                url = ""
            conversations.append(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": question},
                            {"type": "image_url", "image_url": {"url": url}},
                        ],
                    }
                ]
            )
        todo = [i for i in range(len(jobs)) if i not in failed]
        answers = dict(zip(todo, self.client.chat_many([conversations[i] for i in todo])))
        return [failed.get(i, answers.get(i)) for i in range(len(jobs))]


def _data_url(path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
