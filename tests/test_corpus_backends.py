"""Model backends of the corpus: tiny random transformers models, and an OpenAI-compatible server on 127.0.0.1."""

import json
import logging
import re
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tiny_models import save_tiny_llava, save_tiny_lm

from hf_negationclip.corpus import CorpusConfig, Target, has_negation, run_corpus
from hf_negationclip.corpus.backends import Job
from hf_negationclip.corpus.store import iter_split_records

SECRET = "sk-test-DO-NOT-LEAK-4242"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return save_tiny_lm(root / "lm"), save_tiny_llava(root / "llava")


def test_transformers_backends_reject_garbage_with_reasons(world, tiny_models, tmp_path):
    lm, llava = tiny_models
    cfg = CorpusConfig(
        world_dir=str(world),
        output_dir=str(tmp_path),
        splits="val",
        backend="transformers",
        lm_model=str(lm),
        verifiers="annotations+mllm",
        mllm_model=str(llava),
        max_images=3,
        captions_per_image=2,
        batch_size=4,
        max_new_tokens=12,
        show_progress=False,
    )
    summary = run_corpus(cfg)
    records = list(iter_split_records(tmp_path, "val"))
    assert len(records) >= 6 and all(r["status"] == "rejected" and r["reason"] for r in records)
    assert summary["splits"]["val"]["captions"] == 0
    assert any(r["reason"].startswith("transformers:") for r in records)


def test_transformers_verifier_answers_every_job(world, tiny_models):
    from hf_negationclip.corpus.backends.transformers_lm import TransformersVerifier

    images = sorted((Path(world) / "images" / "val").glob("*.jpg"))[:3]
    jobs = [Job(1, i, "a circle", p, "absent-object", i, target=Target("object", "star")) for i, p in enumerate(images)]
    jobs.append(Job(2, 9, "a circle", Path(world) / "missing.jpg", "absent-object", 9, target=Target("object", "star")))
    verdicts = TransformersVerifier(str(tiny_models[1]), batch_size=2).verify(jobs)
    assert len(verdicts) == 4 and all(v in (True, False, None) for v in verdicts)
    assert jobs[-1].reason and "mllm" in jobs[-1].reason  # the unreadable image is rejected with a reason


class _Server:
    """An OpenAI-compatible chat endpoint that misbehaves on purpose for the first requests."""

    def __init__(self, plan=None, always=None, delay=0.03):
        self.plan, self.always, self.delay = plan or {}, always, delay
        self.lock, self.n, self.in_flight, self.max_in_flight, self.auth = threading.Lock(), 0, 0, 0, set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.n += 1
                    mode = server.always or server.plan.get(server.n, "ok")
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.auth.add(self.headers.get("Authorization"))
                try:
                    self._answer(mode, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, status, payload: bytes, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _answer(self, mode, body):
                if mode == "drop":
                    self.close_connection = True  # no response at all: the client sees a dropped connection
                    return
                if mode == "slow":
                    time.sleep(1.0)
                if mode == "429":
                    return self._send(429, b'{"error": "rate limited"}', [("Retry-After", "0")])
                if mode == "500":
                    return self._send(500, b"internal error")
                if mode == "malformed":
                    return self._send(200, b'{"choices": [ this is not json')
                time.sleep(server.delay)
                text = json.dumps({"choices": [{"message": {"role": "assistant", "content": _reply(body)}}]})
                self._send(200, text.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(body) -> str:
    """What a competent model would answer to our three prompts."""
    content = body["messages"][-1]["content"]
    if isinstance(content, list):  # the vision question
        return "No, there is none."
    if "Name one object" in content:
        return "A star."
    caption = re.search(r'Caption: "(.*?)"\n', content).group(1)
    fact = re.search(r"states that there is no (.+?) in the image", content)
    return f'"{caption.rstrip(".")} with no {fact.group(1)}"' if fact else caption


def _openai_cfg(world, out, url, **kw):
    return CorpusConfig(
        world_dir=str(world),
        output_dir=str(out),
        splits="val",
        backend="openai",
        api_base=url,
        api_model="tiny-test",
        verifiers="annotations+mllm",
        pipelines="absent-object",
        max_images=5,
        captions_per_image=2,
        max_in_flight=3,
        request_timeout=0.5,
        show_progress=False,
        **kw,
    )


def test_openai_backend_survives_a_misbehaving_server(world, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = _Server(plan={1: "429", 2: "500", 3: "malformed", 4: "drop", 5: "slow", 7: "500"})
    caplog.set_level(logging.DEBUG)
    try:
        summary = run_corpus(_openai_cfg(world, tmp_path, server.url, max_retries=4))
    finally:
        server.close()
    records = list(iter_split_records(tmp_path, "val"))
    accepted = [r for r in records if r["status"] == "accepted"]
    assert len(records) == 10 and accepted and summary["splits"]["val"]["captions"] == len(accepted)
    assert all(r["reason"] for r in records if r["status"] == "rejected")
    for rec in accepted:  # the endpoint's caption went through validation and the annotation check
        assert rec["negated"] == "star" and "with no star" in rec["negated_caption"] and rec["form"] == "openai-rewrite"
    # the SDK retried each transient failure (429, 500, dropped, timed out, 500); the malformed reply is a counted skip
    assert server.n >= 20 + 5 and 2 <= server.max_in_flight <= 3
    assert sum(r["reason"] == "openai: MalformedResponse" for r in records) == 1
    assert server.auth == {f"Bearer {SECRET}"}
    assert SECRET not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_openai_backend_rejects_when_the_server_never_answers_properly(world, tmp_path):
    server = _Server(always="malformed")
    try:
        run_corpus(_openai_cfg(world, tmp_path, server.url, max_retries=1))
    finally:
        server.close()
    records = list(iter_split_records(tmp_path, "val"))
    assert records and all(r["status"] == "rejected" and r["reason"] == "openai: MalformedResponse" for r in records)


class _MockEndpoint:
    """An ``httpx.MockTransport`` chat endpoint: ``plan`` maps request number -> reply (default: a good completion)."""

    def __init__(self, plan=None, always=None):
        import httpx

        self.plan, self.always, self.requests = plan or {}, always, []
        self.client = httpx.Client(transport=httpx.MockTransport(self.handle))

    def handle(self, request):
        import httpx

        self.requests.append(request)
        mode = self.always or self.plan.get(len(self.requests), "ok")
        if mode == "timeout":
            raise httpx.ReadTimeout("the model is thinking", request=request)
        if mode == "drop":
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        if mode == "429":
            return httpx.Response(429, json={"error": "rate limited"}, headers={"Retry-After": "2"})
        if mode == "500":
            return httpx.Response(500, text="internal error")
        if mode == "400":
            return httpx.Response(400, json={"error": {"message": "bad request"}})
        if mode == "401":  # a careless server that echoes the credentials it refused
            return httpx.Response(401, json={"error": {"message": f"bad key {request.headers['authorization']}"}})
        if mode == "not-json":
            return httpx.Response(200, content=b'{"choices": [ garbage', headers={"content-type": "application/json"})
        if mode == "no-choices":
            return httpx.Response(200, json={"id": "x", "object": "chat.completion", "choices": []})
        if mode == "list-content":
            return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": [1, 2]}}]})
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "A star."}}]})


@pytest.fixture
def sdk_sleeps(monkeypatch):
    """The seconds the openai SDK waits between retries (recorded, not slept)."""
    import openai._base_client

    waits = []
    monkeypatch.setattr(openai._base_client.time, "sleep", waits.append)
    return waits


def _client(endpoint, **kw):
    from hf_negationclip.corpus.backends.openai_api import OpenAIClient

    return OpenAIClient("http://endpoint.test/v1", "tiny-test", http_client=endpoint.client, **kw)


MESSAGES = [{"role": "user", "content": "Name one object."}]


def test_openai_client_rides_the_sdk_retries_and_honours_retry_after(sdk_sleeps):
    endpoint = _MockEndpoint(plan={1: "429", 2: "500", 3: "timeout", 4: "drop"})
    assert _client(endpoint, max_retries=4, api_key=SECRET).chat(MESSAGES) == "A star."
    assert len(endpoint.requests) == 5 and len(sdk_sleeps) == 4
    assert sdk_sleeps[0] == 2.0  # the 429's Retry-After; then the SDK's own exponential backoff
    assert all(0 < w <= 8 for w in sdk_sleeps[1:])
    assert {r.url.path for r in endpoint.requests} == {"/v1/chat/completions"}
    assert {r.headers["authorization"] for r in endpoint.requests} == {f"Bearer {SECRET}"}


def test_openai_client_gives_up_with_counted_errors(sdk_sleeps):
    from hf_negationclip.corpus.backends.openai_api import EndpointError, MalformedResponse

    endpoint = _MockEndpoint(always="timeout")
    with pytest.raises(EndpointError, match="gave up after 3 tries: timeout"):
        _client(endpoint, max_retries=2).chat(MESSAGES)
    assert len(endpoint.requests) == 3
    endpoint = _MockEndpoint(always="400")
    with pytest.raises(EndpointError, match="HTTP 400"):
        _client(endpoint, max_retries=2).chat(MESSAGES)
    assert len(endpoint.requests) == 1  # a bad request is not retried
    for garbage in ("not-json", "no-choices", "list-content"):
        with pytest.raises(MalformedResponse):
            _client(_MockEndpoint(always=garbage), max_retries=1).chat(MESSAGES)
    # chat_many turns every failure into a value, so the pipeline rejects (and counts) that item only
    endpoint = _MockEndpoint(plan={1: "not-json", 2: "400"})
    out = _client(endpoint, max_retries=0, max_in_flight=1).chat_many([MESSAGES] * 3)
    assert [type(o).__name__ for o in out] == ["MalformedResponse", "EndpointError", "str"] and out[2] == "A star."


def test_openai_client_never_leaks_the_key(sdk_sleeps, caplog):
    from hf_negationclip.corpus.backends.openai_api import EndpointError

    caplog.set_level(logging.DEBUG)
    endpoint = _MockEndpoint(always="401")
    client = _client(endpoint, max_retries=1, api_key=SECRET)
    with pytest.raises(EndpointError) as err:
        client.chat(MESSAGES)
    shown = "".join(traceback.format_exception(err.value))  # what --debug would print
    assert str(err.value) == "HTTP 401" and SECRET not in shown and SECRET not in caplog.text
    keyless = _MockEndpoint()
    _client(keyless).chat(MESSAGES)  # a local server without a key still gets a request
    assert keyless.requests[0].headers["authorization"] == "Bearer EMPTY"


def test_openai_backend_needs_an_endpoint(world, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with pytest.raises(ValueError, match="base URL"):
        run_corpus(CorpusConfig(world_dir=str(world), output_dir=str(tmp_path), backend="openai", show_progress=False))


def test_clip_verifier_chains_after_the_annotations(world, tmp_path):
    base = dict(
        world_dir=str(world),
        splits="val",
        pipelines="absent-object",
        verifiers="annotations+clip",
        clip_model="tiny",
        max_images=3,
        captions_per_image=2,
        show_progress=False,
    )
    run_corpus(CorpusConfig(output_dir=str(tmp_path / "strict"), clip_threshold=1e-6, **base))
    strict = list(iter_split_records(tmp_path / "strict", "val"))
    assert strict and all(r["status"] == "rejected" for r in strict)
    assert any(r["reason"] == "clip: present in image" for r in strict)
    run_corpus(CorpusConfig(output_dir=str(tmp_path / "lax"), clip_threshold=1.0, **base))
    lax = list(iter_split_records(tmp_path / "lax", "val"))
    assert any(r["status"] == "accepted" and r["verifier"] == "annotations+clip" for r in lax)
    assert not any(r["reason"] == "clip: present in image" for r in lax)


def test_a_model_backend_writes_the_flip_in_the_same_call_and_garbage_flips_are_rejected(world, tmp_path, monkeypatch):
    """The rewrite prompt asks for JSON {caption, flip}; a good flip is kept, a garbage one rejected and counted."""
    prompts, competent = [], _reply

    def reply(body):
        content = body["messages"][-1]["content"]
        if isinstance(content, list) or "Name one object" in content:
            return competent(body)
        prompts.append(content)
        caption = re.search(r'Caption: "(.*?)"\n', content).group(1).rstrip(".")
        thing = re.search(r"states that there is no (.+?) in the image", content).group(1)
        garbage = sum(map(ord, content)) % 2 == 0
        flip = "a dog on a skateboard" if garbage else f"{caption} with a {thing}"
        return json.dumps({"caption": f"{caption} with no {thing}", "flip": flip})

    monkeypatch.setattr(sys.modules[__name__], "_reply", reply)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = _Server(delay=0)
    try:
        run_corpus(_openai_cfg(world, tmp_path, server.url))
    finally:
        server.close()
    assert prompts and all('{"caption": "...", "flip": "..."}' in p for p in prompts)
    accepted = [r for r in iter_split_records(tmp_path, "val") if r["status"] == "accepted"]
    model = [r for r in accepted if r["flip_source"] == "model"]
    rejected = [r for r in accepted if r["flip_rejected"]]
    assert model and rejected and len(model) + len(rejected) == len(accepted)
    for r in model:
        assert r["flip"] == r["negated_caption"].replace(" with no ", " with a ") and r["mcq_wrong"][0] == r["flip"]
    for r in rejected:  # the garbage is not kept: the rules' flip stands in
        assert r["flip_rejected"] == "flip dropped content words" and r["flip_source"] == "rules"
        assert "dog" not in " ".join(r["mcq_wrong"]) and not has_negation(r["flip"])
    stats = json.loads((tmp_path / "corpus_stats.json").read_text())["text_twins"]
    assert stats["flip rejected/flip dropped content words"] == len(rejected) and stats["flip/model"] == len(model)
