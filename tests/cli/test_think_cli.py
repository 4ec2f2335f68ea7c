"""`mmcascade search --think`: a reasoner's trace is generated once, cached, and embedded with the query."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.cli.demo import demo_collection
from mmcascade.cli.main import app
from mmcascade.data.items import Item
from mmcascade.reasoner import TraceCache, parse_trace, with_trace
from mmcascade.search import Index

runner = CliRunner()


@pytest.fixture(scope="module")
def embedder():
    from mmcascade import Embedder

    return Embedder.from_pretrained("starter")


@pytest.fixture(scope="module")
def tiny_reasoner(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reasoner") / "tiny-qwen2-vl"
    build_tiny_checkpoint("qwen2_vl", folder)
    return folder


def test_encode_queries_with_traces_embeds_the_reasoning(embedder):
    trace = parse_trace("<think>two shapes</think>\nAnswer: a small red square left of a blue star")
    query = "a red square and a blue star"
    with_reasoning = embedder.encode_queries([query, query], traces=[trace, None])  # (2, 16, dim)
    direct = embedder.encode_queries([with_trace(Item(text=query), trace)])
    plain = embedder.encode_queries([query])
    assert torch.allclose(with_reasoning[0], direct[0], atol=1e-5)
    assert torch.allclose(with_reasoning[1], plain[0], atol=1e-5)
    assert not torch.allclose(with_reasoning[0], plain[0], atol=1e-3)
    with pytest.raises(ValueError, match="got 1 traces for 2 queries"):
        embedder.encode_queries([query, query], traces=[trace])


def test_search_with_think_generates_once_and_caches_the_trace(embedder, tiny_reasoner, tmp_path, monkeypatch):
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "cache"))
    scenes = demo_collection() / "scenes"
    with Index.create("t", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        index.add([{"image": scenes / f"scene-{i:02d}.png"} for i in (1, 2, 3)], ids=["1", "2", "3"])
    args = ["search", "t", "--text", "a red square", "--json", "--data-dir", str(tmp_path)]
    think = ["--think", "--reasoner", str(tiny_reasoner), "--think-tokens", "4"]
    for _ in range(2):
        result = runner.invoke(app, [*args, *think])
        assert result.exit_code == 0, result.output
        assert "reasoning (" in result.output
    with TraceCache(tmp_path / "cache" / "traces.sqlite") as cache:
        assert len(cache) == 1  # the second search found the trace in the cache
    hits = json.loads(result.stdout)  # the reasoning goes to stderr; stdout is the JSON list
    assert sorted(hit["id"] for hit in hits) == ["1", "2", "3"]


def test_the_starter_reasoner_is_the_default_only_for_the_starter_embedder() -> None:
    from mmcascade.cli.options import generative_model

    assert generative_model(None, "starter", "--think", "--reasoner") == "starter-reasoner"
    assert generative_model(None, "starter-embedder", "--rerank", "--reranker") == "starter-reasoner"
    assert generative_model("my-judge", "starter", "--rerank", "--reranker") == "my-judge"  # a named model wins
    with pytest.raises(ValueError, match="--rerank needs --reranker: the embedder 'Qwen/Qwen2-VL-2B' has no default"):
        generative_model(None, "Qwen/Qwen2-VL-2B", "--rerank", "--reranker")
