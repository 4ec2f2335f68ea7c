"""Next-token logprobs from the reasoner app (what a reranker judge reads), over a tiny Qwen2-VL on localhost."""

from __future__ import annotations

import asyncio
import base64
import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import torch
from fastapi import FastAPI

from conftest import random_image
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.data.items import Item
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.local import LocalReasoner
from mmcascade.server.reasoner import create_reasoner_app, serve_in_thread

MODEL = "tiny-vlm"
SYSTEM = "Judge the pair."


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def logprobs_body(user: object, prefix: str | None = "Answer:", **fields: object) -> dict:
    """A judge-style request: continue ``prefix`` (None: start the reply) by one token, with logprobs."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    body: dict = {"model": MODEL, "messages": messages, "max_tokens": 1, "logprobs": True, "top_logprobs": 20}
    if prefix is not None:
        messages.append({"role": "assistant", "content": prefix})
        body.update(continue_final_message=True, add_generation_prompt=False)
    body.update(fields)
    return body


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("qwen2_vl", tmp_path_factory.mktemp("logprobs") / "qwen2_vl")


@pytest.fixture(scope="module")
def expected(checkpoint: Path) -> LocalReasoner:
    """The in-process model the server's answers are checked against (its own copy)."""
    return LocalReasoner.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def app(checkpoint: Path) -> FastAPI:
    return create_reasoner_app(LocalReasoner.from_pretrained(checkpoint), MODEL, batch_window_s=0.05)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[httpx.Client]:
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def top_tokens(reasoner: LocalReasoner, prompt: Prompt, prefix: str, k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens and their log-probabilities, computed in this process."""
    backbone = reasoner.backbone
    tokenizer = backbone.processor.tokenizer
    with torch.inference_mode():
        logits = backbone.continuation_logits(
            [Item(text=prompt.user, images=prompt.images)], [prompt.system], [prefix], range(len(tokenizer))
        )[0]  # (V,)
    values, ids = torch.log_softmax(logits, dim=-1).topk(k)
    return [
        (tokenizer.decode([token_id]), value) for token_id, value in zip(ids.tolist(), values.tolist(), strict=True)
    ]


def assert_top_matches(top_logprobs: Sequence[dict], expected: list[tuple[str, float]]) -> None:
    assert [entry["token"] for entry in top_logprobs] == [token for token, _ in expected]
    for entry, (_, logprob) in zip(top_logprobs, expected, strict=True):
        assert entry["logprob"] == pytest.approx(logprob, abs=1e-4)


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


def test_logprobs_after_a_reply_prefix(client: httpx.Client, expected: LocalReasoner) -> None:
    image = random_image(4, (48, 40))
    user = [
        {"type": "text", "text": "Query: a red circle\nCandidate: "},
        {"type": "image_url", "image_url": {"url": data_url(image)}},
    ]
    response = client.post("/v1/chat/completions", json=logprobs_body(user, "<think>\nround\n</think>\nAnswer:"))
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    (first,) = choice["logprobs"]["content"]
    top = first["top_logprobs"]
    assert len(top) == 20
    logprobs = [entry["logprob"] for entry in top]
    assert logprobs == sorted(logprobs, reverse=True)
    assert sum(math.exp(logprob) for logprob in logprobs) <= 1 + 1e-6
    assert (first["token"], first["logprob"]) == (top[0]["token"], top[0]["logprob"])  # greedy: the most likely
    assert choice["message"]["content"] == first["token"]
    assert choice["finish_reason"] == "length"
    assert all(entry["bytes"] == list(entry["token"].encode()) for entry in top)
    prompt = Prompt(system=SYSTEM, user="Query: a red circle\nCandidate: <image>", images=(image,))
    assert_top_matches(top, top_tokens(expected, prompt, "<think>\nround\n</think>\nAnswer:", 20))


def test_logprobs_without_a_prefix_read_the_first_reply_token(client: httpx.Client, expected: LocalReasoner) -> None:
    response = client.post(
        "/v1/chat/completions", json=logprobs_body("what colour is the shape?", None, top_logprobs=3)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    (first,) = body["choices"][0]["logprobs"]["content"]
    prompt = Prompt(system=SYSTEM, user="what colour is the shape?")
    assert_top_matches(first["top_logprobs"], top_tokens(expected, prompt, "", 3))
    (generated,) = expected.complete([prompt], GenerationSettings(max_new_tokens=1))  # greedy generation agrees
    special = expected.backbone.processor.tokenizer.all_special_tokens
    assert generated == first["token"] or (generated == "" and first["token"] in special)
    assert body["usage"]["completion_tokens"] == 1 and body["usage"]["prompt_tokens"] > 0


def model_prompt_tokens(reasoner: LocalReasoner, prompt: Prompt) -> int:
    """The tokens the model reads for ``prompt``: template, system, text and image tokens (its attention mask)."""
    inputs = reasoner.backbone.processor([Item(text=prompt.user, images=prompt.images)], [prompt.system])
    return int(inputs["attention_mask"].sum())


def test_prompt_tokens_count_what_the_model_reads(client: httpx.Client, expected: LocalReasoner) -> None:
    image = random_image(6, (56, 56))
    user = [{"type": "text", "text": "what is this? "}, {"type": "image_url", "image_url": {"url": data_url(image)}}]
    body = {"model": MODEL, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]}
    response = client.post("/v1/chat/completions", json={**body, "max_tokens": 2})
    assert response.status_code == 200, response.text
    prompt = Prompt(system=SYSTEM, user="what is this? <image>", images=(image,))
    prompt_tokens = model_prompt_tokens(expected, prompt)
    assert response.json()["usage"]["prompt_tokens"] == prompt_tokens
    text_only = expected.count_tokens(f"{SYSTEM}\nwhat is this? ")
    assert prompt_tokens > text_only + 1  # the template and the image's tokens are in it
    prefix = "Answer:"
    logprobs = client.post("/v1/chat/completions", json=logprobs_body(user, prefix))
    assert logprobs.status_code == 200, logprobs.text
    assert logprobs.json()["usage"]["prompt_tokens"] == prompt_tokens + expected.count_tokens(prefix)


async def _post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for body in bodies))


def test_concurrent_logprobs_requests_are_batched(client: httpx.Client, app: FastAPI, expected: LocalReasoner) -> None:
    prefixes = ["Answer:", "<think>\nno idea\n</think>\nAnswer:", "", "the cat", "Answer: yes", "a"]
    batches_before = app.state.batcher.n_batches
    bodies = [
        logprobs_body(f"pair {index}: a cup of coffee", prefix, top_logprobs=5) for index, prefix in enumerate(prefixes)
    ]
    responses = asyncio.run(_post_all(str(client.base_url), bodies))
    assert app.state.batcher.n_batches - batches_before < len(prefixes)
    for index, (response, prefix) in enumerate(zip(responses, prefixes, strict=True)):
        assert response.status_code == 200, response.text
        top = response.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        prompt = Prompt(system=SYSTEM, user=f"pair {index}: a cup of coffee")
        assert_top_matches(top, top_tokens(expected, prompt, prefix, 5))


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"max_tokens": 2}, "max_tokens", "logprobs are served for max_tokens=1 only"),
        ({"max_tokens": None, "max_completion_tokens": 5}, "max_completion_tokens", "got max_completion_tokens=5"),
        ({"max_tokens": None}, "max_tokens", "got no max_tokens (default 256)"),
    ],
)
def test_logprobs_need_max_tokens_1(client: httpx.Client, fields: dict, param: str, message: str) -> None:
    response = client.post("/v1/chat/completions", json=logprobs_body("hi", **fields))
    assert response.status_code == 400
    assert error_of(response)["param"] == param
    assert message in error_of(response)["message"] and "send max_tokens=1" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"logprobs": "yes"}, "logprobs", "logprobs must be true or false"),
        ({"top_logprobs": 21}, "top_logprobs", "top_logprobs must be an integer in 0..20"),
        ({"top_logprobs": -1}, "top_logprobs", "top_logprobs must be an integer in 0..20"),
        ({"top_logprobs": True}, "top_logprobs", "top_logprobs must be an integer in 0..20"),
        ({"logprobs": False}, "top_logprobs", "top_logprobs needs logprobs=true"),
        ({"add_generation_prompt": True}, "add_generation_prompt", "needs add_generation_prompt=false"),
        ({"continue_final_message": "true"}, "continue_final_message", "must be true or false"),
        ({"continue_final_message": None}, "add_generation_prompt", "only supported with continue_final_message"),
        ({"logprobs": None, "top_logprobs": None}, "continue_final_message", "not supported for generation"),
    ],
)
def test_bad_logprobs_requests_are_400(client: httpx.Client, fields: dict, param: str, message: str) -> None:
    response = client.post("/v1/chat/completions", json=logprobs_body("hi", **fields))
    assert response.status_code == 400
    assert error_of(response)["param"] == param
    assert message in error_of(response)["message"]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "user", "content": "hi"}], "must be an assistant message (the start of the reply); messages[0]"),
        (
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "image_url", "image_url": {"url": data_url(random_image(0, (8, 8)))}}],
                },
            ],
            "messages[1]: an assistant message cannot hold images",
        ),
        (
            [
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "b"},
            ],
            "messages[0]: role 'assistant' is not supported",
        ),
    ],
)
def test_continued_messages_are_checked(client: httpx.Client, messages: list, message: str) -> None:
    body = {**logprobs_body("unused"), "messages": messages}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert message in error_of(response)["message"]


class TextOnlyReasoner(Reasoner):
    """A reasoner without a backbone: it can complete but not score tokens."""

    model_id = "text-only"

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        return ["ok"] * len(prompts)


def test_logprobs_need_a_generative_backbone() -> None:
    with serve_in_thread(create_reasoner_app(TextOnlyReasoner(), MODEL)) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json=logprobs_body("hi"), timeout=10)
    assert response.status_code == 400
    assert error_of(response)["param"] == "logprobs"
    assert "TextOnlyReasoner) has no generative backbone" in error_of(response)["message"]
