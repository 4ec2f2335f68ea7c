"""The cascade: ordering equals a brute-force rerank of the retrieved list; budgets are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmcascade.backbones import load_backbone
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.budget import Budget
from mmcascade.data.collections import read_collection
from mmcascade.data.items import Item
from mmcascade.rerank import Reranker
from mmcascade.rerank.local import LocalJudge
from mmcascade.search import Cascade, Index, candidate_item, merge_rankings

TEXTS = [
    "a small red circle",
    "a large blue square",
    "two yellow stars above a brown rectangle",
    "a green triangle left of a red circle",
    "a cat on a mat",
    "a grey rocket on the launch pad",
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    from mmcascade import Embedder

    root = tmp_path_factory.mktemp("cascade")
    Image.new("RGB", (48, 48), "red").save(root / "red.png")
    lines = [{"id": f"t{number}", "text": text} for number, text in enumerate(TEXTS)]
    lines.append({"id": "img", "image": "red.png", "text": "a red picture"})
    (root / "docs.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    embedder = Embedder.from_pretrained("starter")
    with Index.create("docs", "starter", backend="exact", data_dir=root, embedder=embedder) as created:
        created.build(read_collection(root / "docs.jsonl"))
    index = Index.open("docs", data_dir=root, embedder=embedder)
    yield index
    index.close()


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    folder = build_tiny_checkpoint("qwen2_vl", tmp_path_factory.mktemp("judge") / "qwen2_vl")
    return Reranker(LocalJudge(load_backbone(folder).eval(), "tiny", batch_size=4))


def test_merge_rankings_by_hand() -> None:
    assert merge_rankings([4, 2, 7, 1], [0.1, 0.9, 0.5]) == [2, 7, 4, 1]
    assert merge_rankings([4, 2, 7], [0.5, 0.5]) == [4, 2, 7]  # ties keep retrieval order
    assert merge_rankings([3, 1], []) == [3, 1]
    assert merge_rankings([4, 2, 7, 1], [0.1, None, 0.5]) == [7, 2, 4, 1]  # unscored: keeps its place
    with pytest.raises(ValueError, match="3 rerank scores for 2 candidates"):
        merge_rankings([0, 1], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("rerank_k", [0, 3, 7])
def test_cascade_order_equals_a_brute_force_rerank(index: Index, reranker: Reranker, rerank_k: int) -> None:
    query = "a red circle"
    budget = Budget(retrieve_k=7, rerank_k=rerank_k)
    hits = Cascade(index, reranker).search(query, budget)
    retrieved = index.search(query, top_k=7)
    assert sorted(hit.id for hit in hits) == sorted(hit.id for hit in retrieved)
    # brute force: score each of the first k retrieved documents on its own, sort by score, keep the rest
    head = retrieved[:rerank_k]
    instruction = index.manifest.query_instruction
    scores = {
        hit.id: reranker.score([Item(text=query, instruction=instruction)], [candidate_item(hit.payload, hit.id)])[0]
        for hit in head
    }
    expected = sorted(head, key=lambda hit: -scores[hit.id].score) + retrieved[rerank_k:]
    assert [hit.id for hit in hits] == [hit.id for hit in expected]
    for hit in hits:
        assert hit.retrieval_rank == next(rank for rank, other in enumerate(retrieved, 1) if other.id == hit.id)
        if hit.id in scores:
            assert hit.rerank_score == pytest.approx(scores[hit.id].score, abs=1e-5)
            assert hit.reasoning == ""
        else:
            assert hit.rerank_score is None and hit.reasoning is None


def test_reasoning_comes_back_with_the_hits(index: Index, reranker: Reranker) -> None:
    hits = Cascade(index, reranker).search("a red circle", Budget(retrieve_k=3, rerank_k=2, think_tokens=4))
    assert sum(hit.reranked for hit in hits) == 2
    assert all(isinstance(hit.reasoning, str) for hit in hits if hit.reranked)


def test_a_reranked_image_document_is_its_file(index: Index) -> None:
    hit = next(hit for hit in index.search("a red picture", top_k=7) if hit.id == "img")
    item = candidate_item(hit.payload, hit.id)
    assert item.text == "a red picture" and Path(item.images[0]).name == "red.png"
    with pytest.raises(ValueError, match="document 'x' cannot be reranked"):
        candidate_item({"score": 1}, "x")
    with pytest.raises(FileNotFoundError, match="document 'y': image file not found"):
        candidate_item({"path": "/nowhere/gone.png"}, "y")


def test_budgets_that_do_not_fit_the_index_are_refused(index: Index, reranker: Reranker) -> None:
    with pytest.raises(ValueError, match=r"K=50\) is larger than index 'docs', which holds 7"):
        Cascade(index, reranker).search("x", Budget(retrieve_k=50))
    stored = index.manifest.doc_budget
    with pytest.raises(ValueError, match=f"stores {stored} vectors per document"):
        Cascade(index, reranker).search("x", Budget(retrieve_k=3, document_vectors=stored + 1))
    with pytest.raises(ValueError, match="needs a reranker"):
        Cascade(index).search("x", Budget(retrieve_k=3, rerank_k=1))


def test_a_candidate_whose_file_moved_keeps_its_place_with_a_warning(tmp_path: Path, reranker: Reranker) -> None:
    from mmcascade import Embedder

    colours = ["red", "blue", "green", "yellow"]
    for colour in colours:
        Image.new("RGB", (48, 48), colour).save(tmp_path / f"{colour}.png")
    lines = [{"id": colour, "image": f"{colour}.png", "text": f"a {colour} picture"} for colour in colours]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    embedder = Embedder.from_pretrained("starter")
    with Index.create("moved", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        index.build(read_collection(tmp_path / "docs.jsonl"))
        retrieved = index.search("a red picture", top_k=4)
        moved = retrieved[1]
        Path(moved.payload["image"]).unlink()  # moved away after indexing
        hits = Cascade(index, reranker).search("a red picture", Budget(retrieve_k=4, rerank_k=4))
    assert len(hits) == 4
    (warned,) = [hit for hit in hits if hit.warning]
    assert warned.id == moved.id and hits.index(warned) + 1 == warned.retrieval_rank == 2
    assert warned.rerank_score is None and "image file not found" in warned.warning
    others = [hit for hit in hits if hit is not warned]
    assert all(hit.reranked for hit in others)
    scores = [hit.rerank_score for hit in others]
    assert scores == sorted(scores, reverse=True)
