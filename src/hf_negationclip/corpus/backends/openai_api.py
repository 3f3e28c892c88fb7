"""Any OpenAI-compatible chat endpoint (vLLM, TGI, Ollama, llama.cpp server) as text backend and verifier.

Requests go through the ``openai`` SDK (``openai.OpenAI(base_url=...,
api_key=..., max_retries=..., timeout=...)``), which retries 408/409/429/5xx,
timeouts and dropped connections with exponential backoff and honours
``Retry-After``. On top of it this module keeps what the SDK does not know:
at most ``max_in_flight`` requests at a time (a thread pool), the check that a
reply is a chat completion with text (anything else is a
:class:`MalformedResponse`), and the rule that a failed item is rejected with
the error's type as reason (counted by the pipeline) while the run goes on.
The API key goes to the SDK only, which sends it as a bearer header: never
logged, never written, never part of an error message.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from .prompts import SYSTEM, GenerativeTextBackend, GenerativeVerifier

logger = logging.getLogger(__name__)

#: what the SDK is given as key when the endpoint needs none (local vLLM / Ollama servers ignore it)
NO_KEY = "EMPTY"


class EndpointError(RuntimeError):
    """The endpoint kept failing (status, timeout, connection, or a body that is not a chat completion)."""


class MalformedResponse(EndpointError):
    pass


class OpenAIClient:
    """Chat completions through the ``openai`` SDK, at most ``max_in_flight`` at a time; thread-safe.

    ``http_client`` (an ``httpx.Client``) is handed to the SDK as it is: tests
    pass one with an ``httpx.MockTransport``, users one with a proxy or
    custom certificates.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_in_flight: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_tokens: int = 64,
        http_client=None,
    ):
        if not base_url or not model:
            raise ValueError(
                "the openai backend needs a base URL and a model (--api_base/--api_model or "
                "OPENAI_BASE_URL/OPENAI_MODEL)"
            )
        try:
            import openai
        except ImportError as err:
            raise ImportError('the openai backend needs the openai SDK: pip install "hf-negationclip[llm]"') from err

        self._openai = openai
        self._client = openai.OpenAI(
            base_url=base_url.rstrip("/"),
            api_key=api_key or NO_KEY,
            max_retries=max_retries,
            timeout=timeout,
            http_client=http_client,
        )
        self.model, self.max_in_flight, self.max_retries = model, max_in_flight, max_retries
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}

    @classmethod
    def from_config(cls, cfg, http_client=None) -> OpenAIClient:
        return cls(
            cfg.api_base or os.environ.get("OPENAI_BASE_URL", ""),
            cfg.api_model or os.environ.get("OPENAI_MODEL", ""),
            cfg.api_key or os.environ.get("OPENAI_API_KEY"),
            cfg.max_in_flight,
            cfg.request_timeout,
            cfg.max_retries,
            http_client=http_client,
        )

    def chat(self, messages: list[dict]) -> str:
        """One completion's text (the SDK retries transient failures); raises EndpointError when it gives up."""
        openai, tries = self._openai, self.max_retries + 1
        try:
            reply = self._client.chat.completions.create(model=self.model, messages=messages, **self.sampling)
        except openai.APITimeoutError:
            raise EndpointError(f"gave up after {tries} tries: timeout") from None
        except openai.APIConnectionError as err:
            raise EndpointError(
                f"gave up after {tries} tries: connection failed ({type(err.__cause__).__name__})"
            ) from None
        except openai.APIStatusError as err:  # 429 / 5xx after the retries; other 4xx at once (retrying will not help)
            raise EndpointError(f"HTTP {err.status_code}") from None
        except ValueError as err:  # the body is not JSON
            raise MalformedResponse(f"not JSON: {type(err).__name__}") from None
        choices = getattr(reply, "choices", None)
        if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
            raise MalformedResponse("not a chat completion (no choices[0].message)")
        content = choices[0].message.content
        if content is not None and not isinstance(content, str):
            raise MalformedResponse(f"message content is a {type(content).__name__}, not text")
        return content or ""

    def chat_many(self, conversations: list[list[dict]]) -> list:
        """Completions for many conversations, at most ``max_in_flight`` at a time; failures come back as exceptions."""

        def one(messages):
            try:
                return self.chat(messages)
            except EndpointError as err:
                logger.debug("endpoint: %s", err)
                return err

        with ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
            return list(pool.map(one, conversations))

    def close(self) -> None:
        self._client.close()


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
