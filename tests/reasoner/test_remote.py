"""OpenAIReasoner against real servers on localhost: the reasoner app over a fake reasoner, and a fault-injecting app."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from conftest import random_image
from mmcascade.data.items import load_image
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.remote import OpenAIReasoner, RemoteReasonerError, image_data_url, user_content
from mmcascade.server.reasoner_app import create_reasoner_app, serve_in_thread

SETTINGS = GenerationSettings(max_new_tokens=48, temperature=0.5, top_p=0.8, seed=11)


class FakeReasoner(Reasoner):
    """Deterministic; reports image sizes and pixel hashes; fails prompts containing ``FAIL``."""

    model_id = "fake-reasoner"

    def __init__(self) -> None:
        self.batches: list[tuple[int, GenerationSettings]] = []
        self._lock = threading.Lock()

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        with self._lock:
            self.batches.append((len(prompts), settings))
        time.sleep(0.02)
        if any("FAIL" in prompt.user for prompt in prompts):
            raise RuntimeError("fake model crashed")
        return [answer(prompt) for prompt in prompts]


def signature(image: object) -> str:
    image = load_image(image)
    return f"{image.width}x{image.height}:{hashlib.md5(image.tobytes()).hexdigest()[:12]}"


def answer(prompt: Prompt) -> str:
    seen = ",".join(signature(image) for image in prompt.images)
    return f"<think>saw {len(prompt.images)} images [{seen}]</think>\nAnswer: {prompt.user} | {prompt.system}"


@pytest.fixture(scope="module")
def fake() -> FakeReasoner:
    return FakeReasoner()


@pytest.fixture(scope="module")
def reasoner_url(fake: FakeReasoner) -> Iterator[str]:
    with serve_in_thread(create_reasoner_app(fake, "fake-vlm")) as url:
        yield f"{url}/v1"


@pytest.fixture
def remote(reasoner_url: str, fake: FakeReasoner) -> OpenAIReasoner:
    fake.batches.clear()
    return OpenAIReasoner(reasoner_url, "fake-vlm", concurrency=16, max_retries=1, backoff_s=0.001, timeout_s=10)


# --------------------------------------------------------------------------------------------
# A fault-injecting server: POST /<scenario>/v1/chat/completions
# --------------------------------------------------------------------------------------------

attempts: collections.Counter[str] = collections.Counter()
requests_seen: list[dict] = []


def ok(text: str) -> JSONResponse:
    return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


def fault_app() -> FastAPI:
    app = FastAPI()

    @app.post("/{scenario}/v1/chat/completions")
    async def chat(scenario: str, request: Request) -> Response:
        attempts[scenario] += 1
        requests_seen.append({"headers": dict(request.headers), "body": await request.json()})
        attempt = attempts[scenario]
        if scenario == "flaky" and attempt <= 2:
            return JSONResponse({"error": {"message": "overloaded, try later"}}, status_code=503)
        if scenario == "rate-limited" and attempt == 1:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "0"})
        if scenario == "garbage":
            return PlainTextResponse("<html>502 bad gateway</html>")
        if scenario == "no-content":
            return JSONResponse({"choices": [{"message": {"role": "assistant", "content": None}}]})
        if scenario == "unauthorized":
            return JSONResponse({"error": {"message": "invalid API key"}}, status_code=401)
        if scenario == "bad-request":
            return JSONResponse({"detail": "prompt is too long"}, status_code=400)
        if scenario == "slow":
            await asyncio.sleep(0.4)
        return ok(f"attempt {attempt}")

    return app


@pytest.fixture(scope="module")
def fault_url() -> Iterator[str]:
    with serve_in_thread(fault_app()) as url:
        yield url


@pytest.fixture
def faulty(fault_url: str) -> Iterator[callable]:
    attempts.clear()
    requests_seen.clear()

    def make(scenario: str, **options: object) -> OpenAIReasoner:
        options = {"max_retries": 4, "backoff_s": 0.001, "timeout_s": 5, **options}
        return OpenAIReasoner(f"{fault_url}/{scenario}/v1", "m", **options)

    yield make


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --------------------------------------------------------------------------------------------
# Round trips through the real reasoner app
# --------------------------------------------------------------------------------------------


def test_text_and_images_round_trip(remote: OpenAIReasoner, fake: FakeReasoner, tmp_path: Path) -> None:
    pil = random_image(1, (31, 17))
    jpeg_path = tmp_path / "photo.jpg"
    random_image(2, (40, 30)).save(jpeg_path, quality=90)
    png_bytes_path = tmp_path / "b.png"
    random_image(3, (8, 64)).save(png_bytes_path)
    palette = random_image(4, (20, 20)).convert("P")  # not RGB: decoded and re-sent as PNG
    prompts = [
        Prompt(
            system="Be brief.",
            user="Compare <image> and <image>, then <image>.",
            images=(pil, jpeg_path, png_bytes_path.read_bytes()),
        ),
        Prompt(system="", user="text only"),
        Prompt(system="S", user="<image> what is it?", images=(palette,)),
    ]
    completions = remote.complete(prompts, SETTINGS)
    assert completions == [answer(prompt) for prompt in prompts]
    # the pixels arrived intact (the JPEG file is passed through, so the server decodes the same bytes)
    assert f"[{signature(pil)},{signature(jpeg_path)},{signature(png_bytes_path)}]" in completions[0]
    assert completions[2].startswith(f"<think>saw 1 images [{signature(palette)}]")
    assert {settings for _, settings in fake.batches} == {SETTINGS}
    assert remote.model_id == f"fake-vlm@{remote.base_url}"


def test_sixteen_concurrent_prompts_are_batched(remote: OpenAIReasoner, fake: FakeReasoner) -> None:
    prompts = [Prompt(system="", user=f"question {index}") for index in range(16)]
    assert remote.complete(prompts, SETTINGS) == [answer(prompt) for prompt in prompts]
    sizes = [size for size, _ in fake.batches]
    assert sum(sizes) == 16 and max(sizes) > 1, fake.batches


def test_partial_failure_exposes_completed(remote: OpenAIReasoner) -> None:
    prompts = [Prompt(system="", user="FAIL now" if index in (2, 5) else f"fine {index}") for index in range(8)]
    with pytest.raises(RemoteReasonerError) as caught:
        remote.complete(prompts, SETTINGS)
    error = caught.value
    assert sorted(error.completed) == [0, 1, 3, 4, 6, 7]
    assert error.completed[4] == answer(prompts[4])
    assert sorted(error.errors) == [2, 5]
    assert "6 of 8 prompts completed, 2 failed" in str(error)
    assert "HTTP 500" in str(error) and "fake model crashed" in str(error)


def test_complete_from_inside_a_running_event_loop(remote: OpenAIReasoner) -> None:
    prompts = [Prompt(system="", user="inside a loop")]

    async def caller() -> tuple[list[str], list[str]]:
        blocking = remote.complete(prompts, SETTINGS)  # e.g. a notebook cell
        awaited = await remote.acomplete(prompts, SETTINGS)
        return blocking, awaited

    assert asyncio.run(caller()) == ([answer(prompts[0])], [answer(prompts[0])])


def test_placeholders_and_content_parts() -> None:
    image = random_image(0, (4, 4))
    parts = user_content(Prompt(system="", user="a <image> b <image>", images=(image, image)))
    assert [part["type"] for part in parts] == ["text", "image_url", "text", "image_url"]
    assert parts[0]["text"] == "a " and parts[2]["text"] == " b "
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    # no placeholders: the images go first
    assert [part["type"] for part in user_content(Prompt(system="", user="tail", images=(image,)))] == [
        "image_url",
        "text",
    ]
    assert image_data_url(b"\xff\xd8\xff\xe0 jpeg").startswith("data:image/jpeg;base64,")
    reasoner = OpenAIReasoner("http://127.0.0.1:1/v1", "m")
    with pytest.raises(ValueError, match="2 <image> placeholder"):
        reasoner.complete([Prompt(system="", user="<image><image>", images=(image,))], SETTINGS)
    assert reasoner.complete([], SETTINGS) == []
    with pytest.raises(ValueError, match="base_url must start with http"):
        OpenAIReasoner("localhost:8000/v1", "m")


def test_missing_image_file_fails_only_its_prompt(remote: OpenAIReasoner, tmp_path: Path) -> None:
    prompts = [Prompt(system="", user="<image>", images=(tmp_path / "missing.png",)), Prompt(system="", user="ok")]
    with pytest.raises(RemoteReasonerError) as caught:
        remote.complete(prompts, SETTINGS)
    assert caught.value.completed == {1: answer(prompts[1])}
    assert "image file not found" in caught.value.errors[0]


# --------------------------------------------------------------------------------------------
# Retries and failures
# --------------------------------------------------------------------------------------------


def test_retries_503_then_succeeds(faulty) -> None:
    reasoner = faulty("flaky", api_key="sk-test", extra_body={"top_k": 20})
    assert reasoner.complete([Prompt(system="sys", user="hi")], SETTINGS) == ["attempt 3"]
    assert attempts["flaky"] == 3
    request = requests_seen[-1]
    assert request["headers"]["authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "m" and body["top_k"] == 20
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (48, 0.5, 0.8, 11)
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]


def test_429_is_retried(faulty) -> None:
    assert faulty("rate-limited").complete([Prompt(system="", user="hi")], SETTINGS) == ["attempt 2"]
    assert attempts["rate-limited"] == 2


@pytest.mark.parametrize(
    ("scenario", "expected"), [("garbage", "not JSON"), ("no-content", "is NoneType, not a string")]
)
def test_garbage_is_retried_then_raises(faulty, scenario: str, expected: str) -> None:
    reasoner = faulty(scenario, max_retries=2)
    with pytest.raises(RemoteReasonerError) as caught:
        reasoner.complete([Prompt(system="", user="hi")], SETTINGS)
    assert attempts[scenario] == 3
    message = str(caught.value)
    assert f"bad response from {reasoner.url}" in message and expected in message
    assert "gave up after 3 attempt(s)" in message
    assert caught.value.completed == {}


def test_other_4xx_is_not_retried(faulty) -> None:
    with pytest.raises(RemoteReasonerError, match="HTTP 400 from .*: prompt is too long"):
        faulty("bad-request").complete([Prompt(system="", user="hi")], SETTINGS)
    assert attempts["bad-request"] == 1
    prompts = [Prompt(system="", user=f"q{index}") for index in range(20)]
    with pytest.raises(RemoteReasonerError, match="invalid API key") as caught:
        faulty("unauthorized", concurrency=1).complete(prompts, SETTINGS)
    assert attempts["unauthorized"] == 1  # an auth failure stops the rest from being sent
    assert "0 of 20 prompts completed" in str(caught.value)
    assert caught.value.errors[19].startswith("not attempted")


def test_timeout_is_retried_then_raises(faulty) -> None:
    with pytest.raises(RemoteReasonerError, match=r"no complete response .* within 0.1 s"):
        faulty("slow", timeout_s=0.1, max_retries=1).complete([Prompt(system="", user="hi")], SETTINGS)
    assert attempts["slow"] == 2


def test_down_endpoint_fails_quickly_and_clearly() -> None:
    url = closed_port_url()
    reasoner = OpenAIReasoner(url, "m", max_retries=3, backoff_s=0.01)
    start = time.perf_counter()
    with pytest.raises(RemoteReasonerError) as caught:
        reasoner.complete([Prompt(system="", user=f"q{index}") for index in range(50)], SETTINGS)
    assert time.perf_counter() - start < 2
    message = str(caught.value)
    assert f"could not reach {url}/chat/completions: connection refused; is the server running?" in message
    assert "0 of 50 prompts completed" in message
    single = OpenAIReasoner(url, "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(
        RemoteReasonerError, match=r"^could not reach .*connection refused; is the server running\? \(gave up after 2"
    ):
        single.complete([Prompt(system="", user="q")], SETTINGS)
