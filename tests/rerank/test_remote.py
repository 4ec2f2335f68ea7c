"""OpenAIJudge against real servers on localhost: the reasoner app over a tiny Qwen2-VL, and a scripted fake."""

from __future__ import annotations

import collections
import math
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from conftest import random_image
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.reasoner.base import Prompt
from mmcascade.reasoner.local import LocalReasoner
from mmcascade.reasoner.remote import RemoteReasonerError
from mmcascade.rerank import Reranker, judgement_prefix, judgement_tokens
from mmcascade.rerank.local import LocalJudge
from mmcascade.rerank.remote import OpenAIJudge
from mmcascade.server.reasoner_app import create_reasoner_app, serve_in_thread

PAIRS = [
    ("a red circle on a white background", "the cat sits on the mat"),
    ({"text": "find an image that matches the caption", "images": [random_image(7, (56, 56))]}, "a red circle"),
    ("which class does this image belong to?", "two yellow stars above one brown rectangle"),
]


def make_judge_like(backbone: object) -> None:
    """Bias every token but ``" yes"`` and ``" no"`` by -8, so those two lead the top logprobs (as a trained
    reranker's do after ``Answer:``), and scale their rows so the random checkpoint's scores spread out."""
    head = backbone.model.lm_head
    tokens = judgement_tokens(backbone.processor.tokenizer)
    judged = [tokens.yes, tokens.no]
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.weight[judged] *= 20.0
        biased.bias.fill_(-8.0)
        biased.bias[judged] = 0.0
    backbone.model.lm_head = biased


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("qwen2_vl", tmp_path_factory.mktemp("judge") / "qwen2_vl")


@pytest.fixture(scope="module")
def local_judge(checkpoint: Path) -> LocalJudge:
    judge = LocalJudge.from_pretrained(checkpoint)
    make_judge_like(judge.backbone)
    return judge


@pytest.fixture(scope="module")
def judge_url(checkpoint: Path) -> Iterator[str]:
    served = LocalReasoner.from_pretrained(checkpoint)  # its own copy: the expectation stays independent
    make_judge_like(served.backbone)
    with serve_in_thread(create_reasoner_app(served, "tiny-judge")) as url:
        yield f"{url}/v1"


# --------------------------------------------------------------------------------------------
# Against the reasoner app over a real (tiny) model
# --------------------------------------------------------------------------------------------


def test_scores_match_the_local_judge(judge_url: str, local_judge: LocalJudge) -> None:
    remote = OpenAIJudge(judge_url, "tiny-judge", timeout_s=30, max_retries=0)
    queries, candidates = zip(*PAIRS, strict=True)
    remote_scores = Reranker(remote).score(list(queries), list(candidates))
    local_scores = Reranker(local_judge).score(list(queries), list(candidates))
    for remote_score, local_score in zip(remote_scores, local_scores, strict=True):
        assert remote_score.score == pytest.approx(local_score.score, abs=1e-4)
        # log-probabilities: the logits shifted by the same log partition function
        assert remote_score.yes_logit < 0 and remote_score.no_logit < 0
        assert remote_score.yes_logit - remote_score.no_logit == pytest.approx(
            local_score.yes_logit - local_score.no_logit, abs=1e-4
        )
    assert max(score.score for score in local_scores) - min(score.score for score in local_scores) > 0.01


def test_a_reasoning_prefix_is_continued(judge_url: str, local_judge: LocalJudge) -> None:
    remote = OpenAIJudge(judge_url, "tiny-judge", timeout_s=30, max_retries=0)
    prompts = [Prompt(system="Judge.", user="<image> a red circle?", images=(random_image(3, (40, 40)),))] * 2
    prefixes = [judgement_prefix(""), judgement_prefix("the shape is round and red")]
    remote_logprobs = remote.yes_no_logits(prompts, prefixes)
    local_logits = local_judge.yes_no_logits(prompts, prefixes)
    for (remote_yes, remote_no), (local_yes, local_no) in zip(remote_logprobs, local_logits, strict=True):
        assert remote_yes - remote_no == pytest.approx(local_yes - local_no, abs=1e-4)
    assert remote_logprobs[0] != pytest.approx(remote_logprobs[1])  # the reasoning changed the judgement


# --------------------------------------------------------------------------------------------
# Against a scripted server: POST /<scenario>/v1/chat/completions
# --------------------------------------------------------------------------------------------

attempts: collections.Counter[str] = collections.Counter()
bodies: list[dict] = []

TOP_LOGPROBS = {
    "exact": [(" yes", -0.5), ("Yes", -0.1), (" no", -1.5)],
    "loose": [("Yes", -0.3), (" No", -2.0), ("no", -2.5)],
    "no-absent": [(" yes", -0.2), ("maybe", -3.0), ("x", -4.0)],
    "yes-absent": [("maybe", -1.0), (" no", -1.5), ("x", -6.0)],
    "neither": [("maybe", -0.1), ("perhaps", -2.0)],
}


def logprobs_answer(top: list[tuple[str, float]]) -> JSONResponse:
    entries = [{"token": token, "logprob": logprob, "bytes": list(token.encode())} for token, logprob in top]
    content = [{**entries[0], "top_logprobs": entries}]
    message = {"role": "assistant", "content": top[0][0]}
    return JSONResponse({"choices": [{"index": 0, "message": message, "logprobs": {"content": content}}]})


def scripted_app() -> FastAPI:
    app = FastAPI()

    @app.post("/{scenario}/v1/chat/completions")
    async def chat(scenario: str, request: Request) -> Response:
        attempts[scenario] += 1
        bodies.append(await request.json())
        if scenario == "garbage":
            return PlainTextResponse("<html>502 bad gateway</html>")
        if scenario == "no-logprobs":  # a server that ignores logprobs
            return JSONResponse({"choices": [{"message": {"role": "assistant", "content": " yes"}, "logprobs": None}]})
        return logprobs_answer(TOP_LOGPROBS[scenario])

    return app


@pytest.fixture(scope="module")
def scripted_url() -> Iterator[str]:
    with serve_in_thread(scripted_app()) as url:
        yield url


@pytest.fixture
def scripted(scripted_url: str) -> Iterator[Callable[..., OpenAIJudge]]:
    attempts.clear()
    bodies.clear()

    def make(scenario: str, **options: object) -> OpenAIJudge:
        options = {"max_retries": 2, "backoff_s": 0.001, "timeout_s": 5, **options}
        return OpenAIJudge(f"{scripted_url}/{scenario}/v1", "m", **options)

    yield make


def test_the_request_continues_the_reply_and_asks_for_logprobs(scripted: Callable[..., OpenAIJudge]) -> None:
    judge = scripted("exact", extra_body={"top_k": 5, "max_tokens": 99})
    image = random_image(1, (16, 16))
    judge.yes_no_logits([Prompt(system="Judge.", user="is <image> red?", images=(image,))], ["Answer:"])
    (body,) = bodies
    assert body["model"] == "m" and body["top_k"] == 5  # extra_body applies but cannot override the judge's fields
    assert (body["max_tokens"], body["temperature"], body["logprobs"], body["top_logprobs"]) == (1, 0, True, 20)
    assert (body["continue_final_message"], body["add_generation_prompt"]) == (True, False)
    system, user, assistant = body["messages"]
    assert system == {"role": "system", "content": "Judge."}
    assert [part["type"] for part in user["content"]] == ["text", "image_url", "text"]
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert assistant == {"role": "assistant", "content": "Answer:"}


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("exact", (-0.5, -1.5)),  # " yes" wins over a likelier "Yes"
        ("loose", (-0.3, -2.0)),  # no exact token: the best stripped, lower-cased match
        ("no-absent", (-0.2, -4.0)),  # " no" not listed: the smallest listed logprob, an upper bound
        ("yes-absent", (-6.0, -1.5)),
    ],
)
def test_yes_and_no_are_read_from_top_logprobs(
    scripted: Callable[..., OpenAIJudge], scenario: str, expected: tuple[float, float]
) -> None:
    prompts = [Prompt(system="", user=f"pair {index}") for index in range(3)]
    assert scripted(scenario).yes_no_logits(prompts, ["Answer:"] * 3) == [expected] * 3


def test_neither_yes_nor_no_is_a_clear_error(scripted: Callable[..., OpenAIJudge]) -> None:
    judge = scripted("neither")
    with pytest.raises(RemoteReasonerError) as caught:
        judge.yes_no_logits([Prompt(system="", user="q")], ["Answer:"])
    message = str(caught.value)
    assert f"neither ' yes' nor ' no' is among the 2 most likely tokens {judge.url}" in message
    assert "['maybe', 'perhaps']" in message
    assert attempts["neither"] == 1  # the same answer would come back: not retried


def test_a_server_without_logprobs_is_a_clear_error(scripted: Callable[..., OpenAIJudge]) -> None:
    judge = scripted("no-logprobs", concurrency=1)
    with pytest.raises(RemoteReasonerError) as caught:
        judge.yes_no_logits([Prompt(system="", user=f"q{index}") for index in range(5)], ["Answer:"] * 5)
    message = str(caught.value)
    assert f"{judge.url} returned no choices[0].logprobs.content[0].top_logprobs" in message
    assert "supports logprobs and continue_final_message" in message
    assert attempts["no-logprobs"] == 1  # neither retried nor sent again for the other pairs
    assert caught.value.errors[4].startswith("not attempted")


def test_garbage_is_retried_then_raises(scripted: Callable[..., OpenAIJudge]) -> None:
    judge = scripted("garbage", max_retries=1)
    with pytest.raises(RemoteReasonerError, match=r"bad response from .*/garbage/v1/chat/completions: not JSON"):
        judge.yes_no_logits([Prompt(system="", user="q")], ["Answer:"])
    assert attempts["garbage"] == 2


def test_a_down_server_fails_quickly_and_clearly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    judge = OpenAIJudge(url, "m", max_retries=0, timeout_s=2)
    start = time.perf_counter()
    with pytest.raises(RemoteReasonerError) as caught:
        judge.yes_no_logits([Prompt(system="", user=f"q{index}") for index in range(10)], ["Answer:"] * 10)
    assert time.perf_counter() - start < 2
    assert f"could not reach {url}/chat/completions: connection refused; is the server running?" in str(caught.value)
    assert caught.value.completed == {}


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"top_logprobs must be an int in 1\.\.20"):
        OpenAIJudge("http://127.0.0.1:1/v1", "m", top_logprobs=0)
    judge = OpenAIJudge("http://127.0.0.1:1/v1", "m")
    with pytest.raises(ValueError, match="got 1 reply prefixes for 2 prompts"):
        judge.yes_no_logits([Prompt(system="", user="a"), Prompt(system="", user="b")], ["Answer:"])
    assert judge.yes_no_logits([], []) == []
    assert math.isclose(judge.timeout_s, 120) and repr(judge).startswith("OpenAIJudge(")
