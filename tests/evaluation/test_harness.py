"""`mmcascade eval` end to end on tiny MMEB-format fixtures with the starter model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmcascade.budget import Budget
from mmcascade.cli.demo import demo_collection
from mmcascade.evaluation.harness import run_eval

VLM2VEC_KEYS = {
    f"{metric}@{k}"
    for metric in ("hit", "ndcg_linear", "ndcg_exponential", "precision", "recall", "f1", "map", "mrr")
    for k in (1, 5, 10)
} | {"num_pred", "num_data"}


@pytest.fixture(scope="module")
def embedder():
    from mmcascade import Embedder

    return Embedder.from_pretrained("starter")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def benchmark(tmp_path) -> Path:
    """A local image_cls set, a global visdoc set with graded qrels, and a dataset with no annotations."""
    root = tmp_path / "mmeb"
    scenes = demo_collection() / "scenes"
    images = root / "image-tasks" / "Toy"
    images.mkdir(parents=True)
    captions = {}
    for index in (1, 2, 3, 4):
        shutil.copy(scenes / f"scene-{index:02d}.png", images / f"s{index}.png")
        captions[index] = (scenes / f"scene-{index:02d}.txt").read_text()
    (images / "broken.png").write_bytes(b"not a png")
    records = [
        {
            "qry_inst": "<|image_1|> Find the caption that describes the image.",
            "qry_text": "",
            "qry_img_path": f"Toy/s{index}.png",
            "tgt_inst": "Represent the caption.",
            "tgt_text": [captions[index]] + [captions[other] for other in (1, 2, 3, 4) if other != index],
            "tgt_img_path": ["", "", "", ""],
        }
        for index in (1, 2, 3, 4)
    ]
    records.append({**records[0], "qry_img_path": "Toy/broken.png"})  # decodes badly: skipped, listed
    write_jsonl(root / "annotations" / "ToyCLS" / "test.jsonl", records)
    pages = root / "visdoc-tasks" / "ToyDocs"
    pages.mkdir(parents=True)
    for index in (1, 2, 3):
        shutil.copy(scenes / f"scene-{index:02d}.png", pages / f"p{index}.png")
    write_jsonl(root / "annotations" / "ToyDocs" / "queries.jsonl", [
        {"query-id": "q1", "query": captions[1]},
        {"query-id": "q2", "query": captions[2]},
    ])  # fmt: skip
    write_jsonl(root / "annotations" / "ToyDocs" / "corpus.jsonl", [
        {"corpus-id": f"p{index}", "image": f"p{index}.png"} for index in (1, 2, 3)
    ])  # fmt: skip
    write_jsonl(root / "annotations" / "ToyDocs" / "qrels.jsonl", [
        {"query-id": "q1", "corpus-id": "p1", "score": 2},
        {"query-id": "q1", "corpus-id": "p3", "score": 1},
        {"query-id": "q2", "corpus-id": "p2", "score": 1},
    ])  # fmt: skip
    (root / "mmeb.yaml").write_text(
        "ToyCLS:\n  dataset_parser: image_i2t\n  dataset_name: ToyCLS\n  image_root: image-tasks/\n"
        "  eval_type: local\n  annotations: annotations\n"
        "ToyDocs:\n  dataset_parser: vidore\n  dataset_name: ToyDocs\n  image_root: visdoc-tasks/ToyDocs\n"
        "  eval_type: global\n  annotations: annotations\n"
        "Absent:\n  dataset_parser: image_cls\n  dataset_name: Absent\n  image_root: image-tasks/\n"
        "  eval_type: local\n  annotations: annotations\n"
    )
    return root


def test_eval_writes_vlm2vec_outputs_per_budget_and_lists_what_it_skipped(benchmark, tmp_path, embedder):
    out = tmp_path / "out"
    run = run_eval(
        benchmark / "mmeb.yaml",
        "starter",
        out,
        budgets=[Budget(1, 1), Budget(16, 64)],
        embedder=embedder,
        log=lambda _: None,
    )
    assert [summary.budget for summary in run.budgets] == ["1x1", "16x64"]
    assert "Absent" in run.skipped
    assert any("broken.png" in problem for problem in run.problems["ToyCLS"])
    for budget in ("1x1", "16x64"):
        scores = json.loads((out / budget / "image" / "ToyCLS_score.json").read_text())
        assert set(scores) == VLM2VEC_KEYS
        assert (scores["num_pred"], scores["num_data"]) == (4, 5)
        docs = json.loads((out / budget / "visdoc" / "ToyDocs_score.json").read_text())
        assert (docs["num_pred"], docs["num_data"]) == (2, 2)
        predictions = [
            json.loads(line) for line in (out / budget / "visdoc" / "ToyDocs_pred.jsonl").read_text().splitlines()
        ]
        assert sorted(predictions[0]["prediction"]) == ["p1", "p2", "p3"]  # global: the whole corpus
        assert predictions[0]["label"] == ["p1", "p3"] and predictions[0]["rel_scores"] == [2, 1]
        report = json.loads((out / budget / "starter.json").read_text())
        assert set(report) == {"metadata", "metrics"}
        assert set(report["metrics"]) == {"image", "visdoc"}
        assert report["metrics"]["visdoc"]["ToyDocs"] == docs
    summary = json.loads((out / "summary.json").read_text())
    averages = summary["budgets"][1]["averages"]
    main = {entry["name"]: entry["main_score"] for entry in summary["budgets"][1]["datasets"]}
    assert averages["overall"]["all"] == pytest.approx((main["ToyCLS"] + main["ToyDocs"]) / 2)
    assert summary["budgets"][1]["datasets"][1]["main_metric"] == "ndcg_linear@5"
    assert "Absent" in summary["skipped_datasets"]
    report_md = (out / "report.md").read_text()
    assert "Skipped datasets" in report_md and "Absent" in report_md
    assert (out / "budget_scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_a_second_budget_and_a_resumed_run_cost_no_encoding(benchmark, tmp_path, embedder, monkeypatch):
    out = tmp_path / "out"
    calls = []
    real_encode = type(embedder).encode_documents

    def counting(self, items, **kwargs):
        calls.append(len(items))
        return real_encode(self, items, **kwargs)

    monkeypatch.setattr(type(embedder), "encode_documents", counting)

    def crash_on_docs(line: str) -> None:
        if line.startswith("ToyDocs: encoding"):
            raise KeyboardInterrupt  # killed while encoding the second dataset

    with pytest.raises(KeyboardInterrupt):
        run_eval(benchmark / "mmeb.yaml", "starter", out, budgets=[Budget(1, 1)], embedder=embedder, log=crash_on_docs)
    first_calls = len(calls)
    assert first_calls > 0
    run = run_eval(
        benchmark / "mmeb.yaml",
        "starter",
        out,
        budgets=[Budget(1, 1), Budget(4, 8)],
        embedder=embedder,
        log=lambda _: None,
    )
    assert run.encoded_from_cache == ["ToyCLS"]  # the finished dataset is reused, with a new budget
    resumed_calls = len(calls) - first_calls
    again = run_eval(
        benchmark / "mmeb.yaml", "starter", out, budgets=[Budget(2, 4)], embedder=embedder, log=lambda _: None
    )
    assert again.encoded_from_cache == ["ToyCLS", "ToyDocs"]
    assert len(calls) == first_calls + resumed_calls  # nothing encoded the third time
    (benchmark / "visdoc-tasks" / "ToyDocs" / "p3.png").write_bytes(
        (benchmark / "visdoc-tasks" / "ToyDocs" / "p1.png").read_bytes()
    )
    changed = run_eval(
        benchmark / "mmeb.yaml", "starter", out, budgets=[Budget(2, 4)], embedder=embedder, log=lambda _: None
    )
    assert changed.encoded_from_cache == ["ToyCLS"]  # a changed media file invalidates that dataset only


def test_bad_budgets_and_unknown_datasets_are_refused(benchmark, tmp_path, embedder):
    with pytest.raises(ValueError, match="budget 32x64 exceeds the model's 16 query x 64 document vectors"):
        run_eval(benchmark / "mmeb.yaml", "starter", tmp_path, budgets=[Budget(32, 64)], embedder=embedder)
    with pytest.raises(ValueError, match="unknown datasets \\['Nope'\\]"):
        run_eval(benchmark / "mmeb.yaml", "starter", tmp_path, datasets=["Nope"], embedder=embedder)


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _main_scores(out: Path, budget: int = 0) -> dict[str, float]:
    return {entry["name"]: entry["main_score"] for entry in _summary(out)["budgets"][budget]["datasets"]}


def test_a_rerun_on_some_datasets_merges_with_the_earlier_run(benchmark, tmp_path, embedder):
    out = tmp_path / "out"
    budgets = [Budget(1, 1), Budget(4, 8)]

    def evaluate(datasets, log=lambda _: None):
        return run_eval(
            benchmark / "mmeb.yaml", "starter", out, budgets=budgets, datasets=datasets, embedder=embedder, log=log
        )

    evaluate(["ToyCLS", "Absent"])
    lines: list[str] = []
    run = evaluate(["ToyDocs"], log=lines.append)
    assert run.kept_from_earlier == ["ToyCLS"]
    assert any("kept 1 dataset(s) of the earlier run" in line for line in lines)
    for index in (0, 1):
        assert list(_main_scores(out, index)) == ["ToyCLS", "ToyDocs"]
    assert set(_summary(out)["skipped_datasets"]) == {"Absent"}  # an earlier skip stays listed
    assert "ToyCLS" in _summary(out)["metadata"]["problems"]  # and so do the earlier reader problems
    report = (out / "report.md").read_text()
    assert "| ToyCLS |" in report and "| ToyDocs |" in report and "Absent" in report
    for budget in ("1x1", "4x8"):
        metrics = json.loads((out / budget / "starter.json").read_text())["metrics"]
        assert set(metrics["image"]) == {"ToyCLS"} and set(metrics["visdoc"]) == {"ToyDocs"}

    # a re-evaluated dataset replaces its earlier result; the others keep theirs
    summary = _summary(out)
    for entry in summary["budgets"][0]["datasets"]:
        entry["main_score"] = -1.0
    (out / "summary.json").write_text(json.dumps(summary))
    evaluate(["ToyCLS"])
    scores = _main_scores(out)
    assert scores["ToyDocs"] == -1.0 and scores["ToyCLS"] >= 0.0
    assert list(scores) == ["ToyCLS", "ToyDocs"]

    # a dataset skipped now loses its earlier result: it is listed as skipped instead
    (benchmark / "annotations" / "ToyDocs" / "queries.jsonl").unlink()
    evaluate(["ToyDocs"])
    assert list(_main_scores(out)) == ["ToyCLS"] and "ToyDocs" in _summary(out)["skipped_datasets"]


def test_a_rerun_with_other_settings_starts_over_and_says_so(benchmark, tmp_path, embedder):
    out = tmp_path / "out"
    config = benchmark / "mmeb.yaml"
    run_eval(config, "starter", out, budgets=[Budget(1, 1)], datasets=["ToyCLS"], embedder=embedder, log=print)
    lines: list[str] = []
    run = run_eval(
        config, "starter", out, budgets=[Budget(2, 4)], datasets=["ToyDocs"], embedder=embedder, log=lines.append
    )
    assert run.kept_from_earlier == []
    assert any("other settings (budgets ['1x1'] -> ['2x4'])" in line and "starting over" in line for line in lines)
    assert [budget["budget"] for budget in _summary(out)["budgets"]] == ["2x4"]
    assert list(_main_scores(out)) == ["ToyDocs"]
    assert not (out / "1x1").exists()  # the earlier run's per-budget results are gone, not mixed in
    assert (out / "cache" / "ToyCLS").is_dir()  # its encoded vectors stay for a later run

    lines.clear()
    run_eval(
        config, "starter", out, budgets=[Budget(2, 4)], datasets=["ToyCLS"], ties="optimistic", embedder=embedder,
        log=lines.append,
    )  # fmt: skip
    assert any("ties 'pessimistic' -> 'optimistic'" in line for line in lines)
    assert list(_main_scores(out)) == ["ToyCLS"]


def test_an_unreadable_earlier_summary_is_replaced(benchmark, tmp_path, embedder):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{not json")
    lines: list[str] = []
    run_eval(
        benchmark / "mmeb.yaml", "starter", out, budgets=[Budget(1, 1)], datasets=["ToyCLS"], embedder=embedder,
        log=lines.append,
    )  # fmt: skip
    assert any("summary.json is unreadable" in line and "starting over" in line for line in lines)
    assert list(_main_scores(out)) == ["ToyCLS"]
