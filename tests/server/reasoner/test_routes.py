"""The OpenAI-compatible reasoner app, run for real with uvicorn on localhost over a fake reasoner."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import random_image
from mmcascade.data.items import load_image
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.server.reasoner import create_reasoner_app, serve_in_thread


class FakeReasoner(Reasoner):
    """Deterministic: reports the images it got (size + pixel hash), the prompt and the settings."""

    model_id = "fake-reasoner"

    def __init__(self) -> None:
        self.batches: list[tuple[int, GenerationSettings]] = []
        self.delay_s = 0.0
        self.fail_on: str | None = None
        self._lock = threading.Lock()

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        with self._lock:
            self.batches.append((len(prompts), settings))
        time.sleep(self.delay_s)
        if self.fail_on is not None and any(self.fail_on in prompt.user for prompt in prompts):
            raise RuntimeError("fake model crashed")
        return [answer(prompt, settings) for prompt in prompts]


def image_signature(image: Image.Image) -> str:
    image = load_image(image)
    return f"{image.width}x{image.height}:{hashlib.md5(image.tobytes()).hexdigest()[:12]}"


def answer(prompt: Prompt, settings: GenerationSettings) -> str:
    seen = ",".join(image_signature(image) for image in prompt.images)
    return (
        f"<think>saw {len(prompt.images)} images [{seen}]</think>\n"
        f"Answer: {prompt.user} | system={prompt.system} | budget={settings.max_new_tokens}"
    )


class CountingReasoner(FakeReasoner):
    """Also counts tokens (one per character), so the app reports usage and finish_reason=length."""

    def count_tokens(self, text: str) -> int:
        return len(text)


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_body(content: object, **fields: object) -> dict:
    body = {
        "model": "fake-vlm",
        "messages": [{"role": "system", "content": "Think first."}, {"role": "user", "content": content}],
        "max_tokens": 64,
    }
    body.update(fields)
    return body


@pytest.fixture(scope="module")
def fake() -> FakeReasoner:
    return FakeReasoner()


@pytest.fixture(scope="module")
def server(fake: FakeReasoner) -> Iterator[str]:
    app = create_reasoner_app(fake, "fake-vlm", max_batch=32, batch_window_s=0.01, max_body_bytes=64 * 1024)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def client(server: str, fake: FakeReasoner) -> Iterator[httpx.Client]:
    fake.batches.clear()
    fake.delay_s = 0.0
    fake.fail_on = None
    with httpx.Client(base_url=server, timeout=10) as client:
        yield client


def error_message(response: httpx.Response) -> str:
    return response.json()["error"]["message"]


def test_models_and_health(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [model["id"] for model in models["data"]] == ["fake-vlm"]
    assert client.get("/health").json()["status"] == "ok"


def test_text_and_images_round_trip(client: httpx.Client, fake: FakeReasoner) -> None:
    first, second = random_image(1, (37, 23)), random_image(2, (16, 48))
    content = [
        {"type": "text", "text": "Compare "},
        {"type": "image_url", "image_url": {"url": data_url(first)}},
        {"type": "text", "text": " with "},
        {"type": "image_url", "image_url": {"url": data_url(second), "detail": "auto"}},
        {"type": "text", "text": "."},
    ]
    response = client.post("/v1/chat/completions", json=chat_body(content, temperature=0.7, top_p=0.9, seed=3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-vlm"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    expected = answer(
        Prompt(system="Think first.", user="Compare <image> with <image>.", images=(first, second)),
        GenerationSettings(max_new_tokens=64),
    )
    assert choice["message"]["content"] == expected
    assert f"[{image_signature(first)},{image_signature(second)}]" in expected  # the pixels arrived intact
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert fake.batches == [(1, GenerationSettings(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=3))]


def test_plain_string_content_and_max_completion_tokens(client: httpx.Client, fake: FakeReasoner) -> None:
    response = client.post("/v1/chat/completions", json=chat_body("just text", max_completion_tokens=7))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].endswith(
        "Answer: just text | system=Think first. | budget=7"
    )
    assert fake.batches[0][1].max_new_tokens == 7


async def _post_many(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for body in bodies))


def test_concurrent_requests_are_batched_by_settings(server: str, client: httpx.Client, fake: FakeReasoner) -> None:
    fake.delay_s = 0.05  # while one batch runs, the others pile up
    bodies = [chat_body(f"question {index}", max_tokens=32 if index % 2 else 16) for index in range(16)]
    responses = asyncio.run(_post_many(server, bodies))
    for index, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert f"Answer: question {index} |" in response.json()["choices"][0]["message"]["content"]
        assert response.json()["choices"][0]["message"]["content"].endswith(f"budget={32 if index % 2 else 16}")
    sizes = [size for size, _ in fake.batches]
    assert sum(sizes) == 16
    assert max(sizes) > 1, fake.batches
    assert len(fake.batches) < 16


def test_one_failing_prompt_does_not_fail_its_batch(server: str, client: httpx.Client, fake: FakeReasoner) -> None:
    fake.delay_s = 0.02
    fake.fail_on = "FAIL"
    bodies = [chat_body("FAIL please" if index == 3 else f"fine {index}") for index in range(8)]
    responses = asyncio.run(_post_many(server, bodies))
    assert [response.status_code for response in responses] == [500 if index == 3 else 200 for index in range(8)]
    assert "fake model crashed" in error_message(responses[3])


@pytest.mark.parametrize("max_tokens", [0, -5, 40_000, 1.5, "64", True])
def test_bad_max_tokens_is_400(client: httpx.Client, max_tokens: object) -> None:
    response = client.post("/v1/chat/completions", json=chat_body("hi", max_tokens=max_tokens))
    assert response.status_code == 400
    assert "max_tokens must be an integer in 1..32768" in error_message(response)
    assert response.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"seed": "x"}, "seed must be null or an integer"),
        ({"seed": 2**70}, "seed must be null or an integer in [-2**63, 2**64 - 1]"),
        ({"stream": True}, "streaming is not supported"),
        ({"n": 2}, "only n=1"),
    ],
)
def test_bad_settings_are_400(client: httpx.Client, fields: dict, expected: str) -> None:
    response = client.post("/v1/chat/completions", json=chat_body("hi", **fields))
    assert response.status_code == 400
    assert expected in error_message(response)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], "messages must be a non-empty list"),
        ([{"role": "system", "content": "x"}], "no user message"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "role 'assistant' is not supported",
        ),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "only one user message"),
        ([{"role": "user", "content": "look: <image>"}], "may not contain the literal <image>"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "'input_audio' is not supported"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]}],
            "not valid base64",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}],
                }
            ],
            "not a readable image",
        ),
    ],
)
def test_bad_messages_are_400(client: httpx.Client, messages: list, expected: str) -> None:
    response = client.post("/v1/chat/completions", json={"model": "fake-vlm", "messages": messages})
    assert response.status_code == 400
    assert expected in error_message(response)


def test_an_unreadable_image_is_named_by_its_place_in_the_request(client: httpx.Client) -> None:
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"hello").decode()}},
    ]
    response = client.post("/v1/chat/completions", json=chat_body(content))
    assert response.status_code == 400
    message = error_message(response)
    assert message.startswith("messages[1].content[1].image_url: the image is not a readable image ("), message
    assert "BytesIO" not in message and "0x" not in message
    assert "check the file" not in message  # there is no file: the hint is about what to send
    assert "send a PNG, JPEG, WebP or GIF image" in message


def test_system_messages_are_joined_in_order(client: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "First rule."},
        {"role": "developer", "content": [{"type": "text", "text": "Second rule."}]},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Third rule."},
    ]
    response = client.post("/v1/chat/completions", json={"model": "fake-vlm", "messages": messages})
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    assert content.endswith("| system=First rule.\n\nSecond rule.\n\nThird rule. | budget=256")


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("</think>", "<think>saw 0 images []"),
        (["never there", "Answer:", "images"], "<think>saw 0 "),  # the earliest match wins, whatever its order
        (["never there"], None),
    ],
)
def test_stop_cuts_the_reply_before_the_first_stop_string(client: httpx.Client, stop: object, expected: str) -> None:
    response = client.post("/v1/chat/completions", json=chat_body("hi", stop=stop))
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    full = answer(Prompt(system="Think first.", user="hi"), GenerationSettings(max_new_tokens=64))
    assert choice["message"]["content"] == (full if expected is None else expected)
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize("stop", ["", [""], ["a", 1], ["a", "b", "c", "d", "e"], {"x": 1}, 7, "\ud800"])
def test_bad_stop_is_400(client: httpx.Client, fake: FakeReasoner, stop: object) -> None:
    body = json.dumps(chat_body("hi", stop=stop)).encode()  # json.dumps escapes the lone surrogate
    response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stop"
    assert fake.batches == []


def test_stop_is_refused_with_logprobs(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=chat_body("hi", max_tokens=1, logprobs=True, stop="x"))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stop"
    assert "not supported with logprobs" in error_message(response)


def test_unknown_paths_answer_in_the_openai_error_shape(client: httpx.Client) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_bug_is_a_500_in_the_openai_error_shape(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmcascade.server.reasoner.routes as routes

    def broken(body: bytes) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(routes, "parse_chat_request", broken)
    response = client.post("/v1/chat/completions", json=chat_body("hi"))
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal server error: KeyError",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_remote_image_url_is_refused(client: httpx.Client, fake: FakeReasoner) -> None:
    content = [{"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}}, {"type": "text", "text": "?"}]
    response = client.post("/v1/chat/completions", json=chat_body(content))
    assert response.status_code == 400
    assert "remote image URLs are not fetched" in error_message(response)
    assert "data:image/png;base64" in error_message(response)
    assert fake.batches == []


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", content=b'{"messages": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in error_message(response)
    response = client.post("/v1/chat/completions", json=["not", "an", "object"])
    assert response.status_code == 400
    assert "must be a JSON object" in error_message(response)


def test_wrong_model_is_404(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=chat_body("hi", model="gpt-4o"))
    assert response.status_code == 404
    assert "this server serves 'fake-vlm'" in error_message(response)


def test_oversize_body_is_413(client: httpx.Client, fake: FakeReasoner) -> None:
    big = random_image(5, (200, 200))  # ~120 kB of noise as PNG, over the 64 KiB limit of this app
    response = client.post(
        "/v1/chat/completions", json=chat_body([{"type": "image_url", "image_url": {"url": data_url(big)}}])
    )
    assert response.status_code == 413
    assert "limit of 0.0625 MiB" in error_message(response)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield json.dumps(chat_body("x" * 100_000)).encode()

    response = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert fake.batches == []


def test_usage_and_finish_reason_when_the_reasoner_counts_tokens() -> None:
    app = create_reasoner_app(CountingReasoner(), "counting")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        long = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        )
        roomy = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 999}
        )
    assert long.status_code == roomy.status_code == 200
    usage = long.json()["usage"]
    text = long.json()["choices"][0]["message"]["content"]
    assert usage["completion_tokens"] == len(text)
    assert usage["prompt_tokens"] == len("\nhi")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert long.json()["choices"][0]["finish_reason"] == "length"
    assert roomy.json()["choices"][0]["finish_reason"] == "stop"


def test_a_stopped_reply_counts_its_cut_text_and_finishes_with_stop() -> None:
    app = create_reasoner_app(CountingReasoner(), "counting")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stop": "</think>"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice, usage = response.json()["choices"][0], response.json()["usage"]
    assert choice["message"]["content"] == "<think>saw 0 images []"
    assert usage["completion_tokens"] == len("<think>saw 0 images []")  # over max_tokens=5, but it stopped
    assert choice["finish_reason"] == "stop"


# --------------------------------------------------------------------------------------------
# mmcascade serve reasoner
# --------------------------------------------------------------------------------------------


def test_serve_cli_wires_the_local_reasoner_into_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from fastapi import FastAPI
    from typer.testing import CliRunner

    from mmcascade.cli.main import app

    loaded: list[str] = []
    served: dict = {}

    def load_reasoner(name: str) -> Reasoner:
        loaded.append(name)
        return FakeReasoner()

    import mmcascade.cli.serve as serve_command

    monkeypatch.setattr(serve_command, "load_reasoner", load_reasoner)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    result = CliRunner().invoke(app, ["serve", "reasoner", "--model", "my/vlm", "--port", "8123", "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    assert loaded == ["my/vlm"]
    assert isinstance(served["app"], FastAPI)
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    assert served["app"].state.batcher.max_batch == 4


def test_serve_cli_explains_missing_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import mmcascade.cli.serve as serve_command
    from mmcascade.cli.main import app

    monkeypatch.setattr(serve_command, "load_reasoner", lambda name: pytest.fail("checked before loading a model"))
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # the server extra is missing
    result = CliRunner().invoke(app, ["serve", "reasoner", "--model", "my/vlm"])
    assert result.exit_code == 2
    assert "pip install 'mmcascade[server]'" in result.output
