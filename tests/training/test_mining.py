"""Reranker-mined hard negatives: the decision rules by hand, then `mine` end to end on tiny models, resumed."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import random_image
from mmcascade import Embedder
from mmcascade.backbones import load_backbone
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.data.items import Item
from mmcascade.data.records import read_records
from mmcascade.rerank import Reranker
from mmcascade.rerank.local import LocalJudge
from mmcascade.training.mining import MinedCandidate, mine, select_negatives


def candidate(id: str, rank: int, score: float, positive: bool = False) -> MinedCandidate:
    return MinedCandidate(id=id, rank=rank, retrieval_score=10.0 - rank, rerank_score=score, is_positive=positive)


def ids(candidates) -> list[str]:
    return [getattr(entry, "candidate", entry).id for entry in candidates]


# --------------------------------------------------------------------------------------------- select_negatives
def test_threshold_splits_false_negatives_from_hard_negatives_in_retrieval_order() -> None:
    candidates = [candidate("d", 4, 0.1), candidate("a", 1, 0.9), candidate("c", 3, 0.2), candidate("b", 2, 0.3)]
    decision = select_negatives(candidates, n_negatives=2, threshold=0.5)
    assert ids(decision.hard_negatives) == ["b", "c"]  # highest-ranked non-relevant first, capped at 2
    assert ids(decision.false_negatives) == ["a"] and decision.false_negatives[0].rule == "threshold"


def test_a_labelled_positive_ranked_first_is_never_a_negative_nor_a_false_negative() -> None:
    candidates = [candidate("pos", 1, 0.1, positive=True), candidate("x", 2, 0.2), candidate("y", 3, 0.95)]
    decision = select_negatives(candidates, n_negatives=3, threshold=0.5)
    assert ids(decision.hard_negatives) == ["x"]
    assert ids(decision.false_negatives) == ["y"]


def test_margin_is_absolute_on_the_p_yes_scale_below_the_positive_score() -> None:
    candidates = [candidate("above", 1, 0.48), candidate("near", 2, 0.36), candidate("far", 3, 0.34)]
    decision = select_negatives(candidates, n_negatives=3, threshold=0.5, margin=0.1, positive_score=0.45)
    # 0.45 - 0.1 = 0.35: "near" is within the margin, "above" (over the positive) too; "far" is a negative
    assert [(entry.candidate.id, entry.rule) for entry in decision.false_negatives] == [
        ("above", "margin"),
        ("near", "margin"),
    ]
    assert ids(decision.hard_negatives) == ["far"]
    # without the positive's score, or without a margin, only the threshold applies
    for options in ({"margin": 0.1}, {"positive_score": 0.45}):
        decision = select_negatives(candidates, n_negatives=3, threshold=0.5, **options)
        assert ids(decision.hard_negatives) == ["above", "near", "far"] and not decision.false_negatives


def test_the_threshold_rule_wins_over_the_margin_rule() -> None:
    decision = select_negatives([candidate("a", 1, 0.7)], n_negatives=1, threshold=0.6, margin=0.5, positive_score=0.8)
    assert decision.false_negatives[0].rule == "threshold"


def test_everything_judged_relevant_leaves_no_negatives() -> None:
    candidates = [candidate("pos", 1, 0.99, positive=True), candidate("a", 2, 0.8), candidate("b", 3, 0.5)]
    decision = select_negatives(candidates, n_negatives=3, threshold=0.5)
    assert decision.hard_negatives == ()
    assert ids(decision.false_negatives) == ["a", "b"]
    assert select_negatives([], n_negatives=1, threshold=0.5).hard_negatives == ()


def test_ties_on_a_boundary_count_as_relevant_and_equal_ranks_keep_input_order() -> None:
    # 0.8 - 0.1 is 0.7000000000000001 in floats: a score of 0.7 still sits on the margin boundary
    on_margin = select_negatives([candidate("a", 1, 0.7)], n_negatives=1, threshold=0.9, margin=0.1, positive_score=0.8)
    assert ids(on_margin.false_negatives) == ["a"]
    on_threshold = select_negatives([candidate("a", 1, 0.5), candidate("b", 2, 0.4999)], n_negatives=2, threshold=0.5)
    assert ids(on_threshold.false_negatives) == ["a"] and ids(on_threshold.hard_negatives) == ["b"]
    same_rank = [candidate("second", 2, 0.1), candidate("first", 2, 0.1), candidate("top", 1, 0.1)]
    assert ids(select_negatives(same_rank, n_negatives=3, threshold=0.5).hard_negatives) == ["top", "second", "first"]


def test_every_false_negative_is_reported_even_past_the_negative_cap() -> None:
    candidates = [candidate("n1", 1, 0.1), candidate("n2", 2, 0.1), candidate("n3", 3, 0.1), candidate("fn", 4, 0.6)]
    decision = select_negatives(candidates, n_negatives=1, threshold=0.5)
    assert ids(decision.hard_negatives) == ["n1"] and ids(decision.false_negatives) == ["fn"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_negatives": 0}, "n_negatives"),
        ({"n_negatives": True}, "n_negatives"),
        ({"threshold": 1.5}, "threshold must be a P"),
        ({"threshold": float("nan")}, "threshold must be a P"),
        ({"margin": -0.1}, "margin must be a number >= 0"),
        ({"positive_score": 2.0}, "positive_score must be a probability"),
    ],
)
def test_bad_settings_are_named(options: dict, message: str) -> None:
    settings = {"n_negatives": 2, "threshold": 0.5, "margin": 0.1, "positive_score": 0.5, **options}
    with pytest.raises(ValueError, match=message):
        select_negatives([candidate("a", 1, 0.1)], **settings)


def test_bad_candidates_are_named() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        select_negatives([candidate("a", 1, 0.1), candidate("a", 2, 0.2)], n_negatives=1, threshold=0.5)
    with pytest.raises(ValueError, match="rerank_score must be a probability"):
        candidate("a", 1, 1.2)
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        candidate("a", 0, 0.2)


# --------------------------------------------------------------------------------------------- mine, end to end
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("qwen2_vl", tmp_path_factory.mktemp("tiny") / "qwen2_vl")


@pytest.fixture(scope="module")
def retriever(checkpoint: Path) -> Embedder:
    return Embedder.from_pretrained(
        checkpoint, head="meta_tokens", head_options={"num_query_tokens": 2, "num_document_tokens": 4}
    )


@pytest.fixture(scope="module")
def judge(checkpoint: Path) -> LocalJudge:
    return LocalJudge(load_backbone(checkpoint).eval(), "tiny", batch_size=8)


class CountingReranker(Reranker):
    """Counts calls and judged pairs; raises on call number ``fail_on`` (a killed run)."""

    def __init__(self, judge: LocalJudge, fail_on: int | None = None) -> None:
        super().__init__(judge)
        self.calls = 0
        self.pairs: list[tuple[str, str]] = []
        self.fail_on = fail_on

    def score(self, queries, candidates, *, think_tokens=0):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("killed")
        self.pairs += [(repr(query), repr(item)) for query, item in zip(queries, candidates, strict=True)]
        return super().score(queries, candidates, think_tokens=think_tokens)


GOOD_RECORDS = [
    {
        "query": {"text": "a red circle"},
        "positive": {"image": "images/red.png"},
        "negatives": [{"text": "a blue square"}],
    },
    {
        "query": {"text": "a small blue square left of a large green triangle", "instruction": "Find the caption."},
        "positive": {"text": "a blue square"},
        "negatives": [{"text": "the cat sits on the mat"}],
    },
    {"query": {"text": "what colour is the shape?", "image": "images/green.png"}, "positive": {"text": "green"}},
    {
        "query": {"text": "two yellow stars above one brown rectangle"},
        "positive": {"text": "two yellow stars"},
        "negatives": [{"image": "images/red.png"}, {"text": "a grey rocket"}],
        "meta": {"source": "hand"},
    },
    # the same query as the first record with another positive: each is a labelled positive of the other
    {"query": {"text": "a red circle"}, "positive": {"text": "a red disc"}},
]
BAD_LINES = [
    '{"query": {"text": "cut',  # malformed JSON
    json.dumps({"query": {"text": "x"}, "positive": {"image": "images/missing.png"}}),  # missing image
    json.dumps({"query": {"text": "y"}, "positive": {"image": "images/broken.png"}}),  # unreadable image
]


def write_records_file(folder: Path, bad_lines: bool = False) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    random_image(1).save(folder / "images" / "red.png")
    random_image(2, (64, 64)).save(folder / "images" / "green.png")
    (folder / "images" / "broken.png").write_bytes(b"not an image")
    lines = [json.dumps(record) for record in GOOD_RECORDS]
    if bad_lines:
        lines = [lines[0], BAD_LINES[0], *lines[1:3], BAD_LINES[1], lines[3], BAD_LINES[2], lines[4]]
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def as_item(side: dict, folder: Path) -> Item:
    images = (str(folder / side["image"]),) if "image" in side else ()
    return Item(text=side.get("text"), images=images, instruction=side.get("instruction"))


def side_key(side: dict) -> tuple:
    return (side.get("text"), side.get("image"))


@dataclass
class Judgements:
    """Retrieval and rerank scores worked out without `mine`: the full MaxSim matrix, then the reranker on every
    pair (top-N, the positive and the original negatives) of each record."""

    retrieved: list[list[tuple]]  # per record: corpus keys, best first
    scores: dict[tuple[str, tuple], float]  # (query JSON, corpus key) -> P(yes)

    def middle_threshold(self) -> float:
        """The middle of the widest gap between the middle scores: splits them, far from every score."""
        values = sorted(set(self.scores.values()))
        middle = values[len(values) // 4 : 3 * len(values) // 4 + 1]
        low, high = max(itertools.pairwise(middle), key=lambda pair: pair[1] - pair[0])
        return (low + high) / 2


def judge_independently(folder: Path, retriever: Embedder, judge: LocalJudge, top_n: int) -> Judgements:
    corpus: dict[tuple, dict] = {}
    for record in GOOD_RECORDS:
        for side in [record["positive"], *record.get("negatives", [])]:
            corpus.setdefault(side_key(side), side)
    keys = list(corpus)
    documents = retriever.encode_documents([as_item(corpus[key], folder) for key in keys])
    queries = retriever.encode_queries([as_item(record["query"], folder) for record in GOOD_RECORDS])
    similarity = retriever.similarity(queries, documents)  # (n_records, n_corpus)
    reranker = Reranker(judge)
    judgements = Judgements([], {})
    for row, record in zip(similarity, GOOD_RECORDS, strict=True):
        order = torch.argsort(row, descending=True, stable=True)[:top_n].tolist()
        judgements.retrieved.append([keys[index] for index in order])
        pairs = [keys[index] for index in order] + [side_key(record["positive"])]
        pairs += [side_key(side) for side in record.get("negatives", [])]
        query = as_item(record["query"], folder)
        results = reranker.score([query] * len(pairs), [as_item(corpus[key], folder) for key in pairs])
        for key, result in zip(pairs, results, strict=True):
            judgements.scores[(json.dumps(record["query"]), key)] = result.score
    return judgements


def expected_negatives(
    judgements: Judgements,
    *,
    n_negatives: int,
    threshold: float,
    margin: float | None = None,
    keep_original_negatives: bool = False,
) -> list[list[tuple]]:
    """The negatives each record should get: the rules of the brief, applied inline."""
    expected = []
    for record, candidates in zip(GOOD_RECORDS, judgements.retrieved, strict=True):
        query = json.dumps(record["query"])
        labelled = {side_key(other["positive"]) for other in GOOD_RECORDS if other["query"] == record["query"]}
        positive_score = judgements.scores[(query, side_key(record["positive"]))]

        def relevant(key: tuple, query: str = query, positive_score: float = positive_score) -> bool:
            score = judgements.scores[(query, key)]
            return score >= threshold or (margin is not None and score >= positive_score - margin)

        negatives = [key for key in candidates if key not in labelled and not relevant(key)][:n_negatives]
        if keep_original_negatives:
            for side in record.get("negatives", []):
                key = side_key(side)
                if key not in labelled and key not in negatives and not relevant(key):
                    negatives.append(key)
        expected.append(negatives)
    return expected


def written_negatives(path: Path) -> list[list[tuple]]:
    folder = path.parent
    result = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        result.append([side_key(side) for side in data["negatives"]])
        for side in data["negatives"]:
            assert "image" not in side or (folder / side["image"]).is_file()
    return [[(text, image) for text, image in negatives] for negatives in result]


def test_mine_writes_the_negatives_an_independent_computation_expects(
    retriever: Embedder, judge: LocalJudge, tmp_path: Path
) -> None:
    records_path = write_records_file(tmp_path)
    judgements = judge_independently(tmp_path, retriever, judge, top_n=4)
    threshold = judgements.middle_threshold()
    expected = expected_negatives(judgements, n_negatives=2, threshold=threshold)
    reranker = CountingReranker(judge)
    result = mine(
        records_path, tmp_path / "mined.jsonl", retriever=retriever, reranker=reranker, retriever_id="tiny",
        top_n=4, n_negatives=2, threshold=threshold,
    )  # fmt: skip
    assert written_negatives(result.out_path) == expected
    assert any(expected)
    assert reranker.calls == 4  # one call per distinct query (records 1 and 5 share theirs)
    mined = read_records(result.out_path)
    assert [record.meta for record in mined] == [record.get("meta", {}) for record in GOOD_RECORDS]
    assert mined[0].positive == as_item(GOOD_RECORDS[0]["positive"], tmp_path)
    report = json.loads(result.report_path.read_text())
    assert report["counts"]["mined_negatives"] == sum(map(len, expected))
    assert report["counts"]["corpus_items"] == 7  # "a blue square" and red.png appear twice, counted once
    for entry in report["false_negatives"]:
        assert entry["score"] >= threshold and entry["rule"] == "threshold"
        assert entry["score"] == pytest.approx(
            judgements.scores[(json.dumps(GOOD_RECORDS[entry["line"] - 1]["query"]), side_key_of(entry, tmp_path))],
            abs=1e-5,
        )
    assert report["counts"]["false_negatives_filtered"] == len(report["false_negatives"]) > 0
    assert result.out_path.with_name("mined.scores.jsonl") == result.state_path

    # New decision settings reuse the judgements: only the original negatives not retrieved are judged now.
    expected = expected_negatives(
        judgements, n_negatives=1, threshold=threshold, margin=0.02, keep_original_negatives=True
    )
    again = CountingReranker(judge)
    result = mine(
        records_path, tmp_path / "mined.jsonl", retriever=retriever, reranker=again, retriever_id="tiny",
        top_n=4, n_negatives=1, threshold=threshold, margin=0.02, keep_original_negatives=True,
    )  # fmt: skip
    assert written_negatives(result.out_path) == expected
    assert result.pairs_from_state > 0 and len(again.pairs) == result.pairs_scored


def side_key_of(entry: dict, folder: Path) -> tuple:
    image = entry["candidate"].get("image")
    return (entry["candidate"].get("text"), Path(image).relative_to(folder).as_posix() if image else None)


def test_a_killed_run_resumes_without_rescoring_and_matches_an_uninterrupted_run(
    retriever: Embedder, judge: LocalJudge, tmp_path: Path
) -> None:
    records_path = write_records_file(tmp_path)
    settings = {"retriever": retriever, "retriever_id": "tiny", "top_n": 3, "n_negatives": 2, "threshold": 0.5}
    uninterrupted = mine(records_path, tmp_path / "whole.jsonl", reranker=CountingReranker(judge), **settings)

    killed = CountingReranker(judge, fail_on=3)
    with pytest.raises(RuntimeError, match="killed"):
        mine(records_path, tmp_path / "resumed.jsonl", reranker=killed, **settings)
    state = tmp_path / "resumed.scores.jsonl"
    assert len(state.read_text().splitlines()) == 1 + 2  # the header and the two queries judged before the kill
    assert not (tmp_path / "resumed.jsonl").exists()
    with state.open("a") as handle:
        handle.write('{"query": "0123')  # a line cut by the kill
    resumed = CountingReranker(judge)
    result = mine(records_path, tmp_path / "resumed.jsonl", reranker=resumed, **settings)

    assert resumed.calls == 2 and not set(resumed.pairs) & set(killed.pairs)
    assert result.pairs_from_state == len(killed.pairs) and result.pairs_scored == len(resumed.pairs)
    assert result.out_path.read_text() == uninterrupted.out_path.read_text()
    reports = [json.loads(path.read_text()) for path in (uninterrupted.report_path, result.report_path)]
    for report in reports:
        for key in ("output", "state", "run"):
            report.pop(key)
    assert reports[0] == reports[1]

    rerun = CountingReranker(judge)  # everything judged: nothing is encoded or scored again
    mine(records_path, tmp_path / "resumed.jsonl", reranker=rerun, **settings)
    assert rerun.calls == 0


def test_a_state_file_from_other_settings_is_refused(retriever: Embedder, judge: LocalJudge, tmp_path: Path) -> None:
    records_path = write_records_file(tmp_path)
    settings = {"retriever": retriever, "retriever_id": "tiny", "n_negatives": 1, "threshold": 0.5}
    mine(records_path, tmp_path / "mined.jsonl", reranker=Reranker(judge), top_n=2, **settings)
    with pytest.raises(ValueError, match=r"other settings \(top_n 2 in the file, 3 now\).*delete it.*--state"):
        mine(records_path, tmp_path / "mined.jsonl", reranker=Reranker(judge), top_n=3, **settings)
    other_judge = LocalJudge(judge.backbone, "another-judge")
    with pytest.raises(ValueError, match="reranker 'tiny' in the file, 'another-judge' now"):
        mine(records_path, tmp_path / "mined.jsonl", reranker=Reranker(other_judge), top_n=2, **settings)
    records_path.write_text(records_path.read_text() + json.dumps(GOOD_RECORDS[1]) + "\n")
    with pytest.raises(ValueError, match="input_sha256"):
        mine(records_path, tmp_path / "mined.jsonl", reranker=Reranker(judge), top_n=2, **settings)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    with pytest.raises(ValueError, match="not a mining state file"):
        mine(records_path, tmp_path / "mined.jsonl", reranker=Reranker(judge), top_n=2, state_path=junk, **settings)
    with pytest.raises(ValueError, match="the output and the records file are the same file"):
        mine(records_path, records_path, reranker=Reranker(judge), top_n=2, **settings)


def test_bad_lines_are_skipped_and_reported(retriever: Embedder, judge: LocalJudge, tmp_path: Path) -> None:
    records_path = write_records_file(tmp_path, bad_lines=True)
    result = mine(
        records_path, tmp_path / "out" / "mined.jsonl", retriever=retriever, reranker=Reranker(judge),
        retriever_id="tiny", top_n=2, n_negatives=1, threshold=0.5, report_path=tmp_path / "report.json",
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert [entry["line"] for entry in report["skipped"]] == [2, 5, 7]
    reasons = [entry["reason"] for entry in report["skipped"]]
    assert "malformed JSON" in reasons[0] and "file not found" in reasons[1] and "cannot be read" in reasons[2]
    assert result.counts.records_skipped == 3 and result.counts.queries == len(GOOD_RECORDS)
    written = [json.loads(line) for line in result.out_path.read_text().splitlines()]
    assert [record["query"]["text"] for record in written] == [record["query"]["text"] for record in GOOD_RECORDS]
    assert written[0]["positive"] == {"image": str(tmp_path / "images" / "red.png")}  # outside out/: absolute
