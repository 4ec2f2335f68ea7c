"""`mmcascade index` / `search` end to end on a copy of the bundled demo collection, with the starter model.

The kill test runs the real console script in a subprocess and SIGKILLs it after two batches are stored.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmcascade.cli.demo import demo_collection
from mmcascade.cli.main import app
from mmcascade.search import Index

runner = CliRunner()
N_SCENES = 16


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """16 demo scenes with their captions, plus a corrupt image."""
    folder = tmp_path_factory.mktemp("collection")
    source = demo_collection() / "scenes"
    for index in range(1, N_SCENES + 1):
        for suffix in (".png", ".txt"):
            shutil.copy(source / f"scene-{index:02d}{suffix}", folder / f"scene-{index:02d}{suffix}")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def console_script(*args: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mmcascade", *args, "--data-dir", str(data_dir)]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)


def build_args(name: str, collection: Path, backend: str) -> list[str]:
    return [
        "index", "build", name, "--input", str(collection), "--backend", backend, "--batch-size", "2",
        "--captions", "payload", "--instruction", "Represent the image.",
        "--query-instruction", "Find the image that matches the caption.",
    ]  # fmt: skip


@pytest.mark.parametrize("backend", ["exact", "qdrant-edge"])
def test_build_killed_mid_batch_resumes_without_loss_or_duplicates_then_searches(collection, tmp_path, backend):
    data_dir = tmp_path / "data"
    command = console_script(*build_args("shapes", collection, backend), data_dir=data_dir)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stored_lines = []
    for line in process.stdout:  # one line per durable batch when the output is not a terminal
        if line.startswith("documents ") and not line.startswith("documents 0/"):
            stored_lines.append(line)
            if len(stored_lines) == 2:
                process.send_signal(signal.SIGKILL)  # lands while the third batch is being encoded
                break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the build finished before it could be killed"

    with Index.open("shapes", data_dir=data_dir) as index:
        partial = index.count()
    assert 0 < partial < N_SCENES

    resumed = run_cli(*console_script(*build_args("shapes", collection, backend), data_dir=data_dir))
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    output = resumed.stderr + resumed.stdout
    assert f"added {N_SCENES - partial}, already indexed {partial}, skipped 1" in output
    assert "corrupt.png" in output and "not a readable image" in output

    with Index.open("shapes", data_dir=data_dir) as index:
        assert index.count() == N_SCENES
        assert index.store.contains([f"scene-{i:02d}.png" for i in range(1, N_SCENES + 1)]) == [True] * N_SCENES

    caption = (collection / "scene-06.txt").read_text()
    search = run_cli(
        *console_script("search", "shapes", "--text", caption, "--top-k", "5", "--json", data_dir=data_dir)
    )
    assert search.returncode == 0, search.stderr
    results = json.loads(search.stdout)
    assert [result["rank"] for result in results] == [1, 2, 3, 4, 5]
    assert len({result["id"] for result in results}) == 5
    assert set(results[0]) == {"id", "score", "rank", "payload"}
    assert results[0]["id"] == "scene-06.png"
    assert results[0]["payload"] == {"path": str((collection / "scene-06.png").resolve()), "caption": caption}
    scores = [result["score"] for result in results]
    assert scores == sorted(scores, reverse=True)


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    result = runner.invoke(app, [*build_args("shapes", collection, "exact"), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return data_dir


def test_rerunning_a_finished_build_adds_nothing(collection, built):
    result = runner.invoke(app, [*build_args("shapes", collection, "exact"), "--data-dir", str(built)])
    assert result.exit_code == 0, result.output
    assert f"added 0, already indexed {N_SCENES}, skipped 1" in result.output


def test_search_table_info_and_list(built, collection):
    result = runner.invoke(
        app, ["search", "shapes", "--image", str(collection / "scene-03.png"), "-k", "2", "--data-dir", str(built)]
    )
    assert result.exit_code == 0, result.output
    assert "scene-03.png" in result.output and "rank" in result.output
    info = runner.invoke(app, ["index", "info", "shapes", "--json", "--data-dir", str(built)])
    details = json.loads(info.output)
    assert (details["count"], details["backend"], details["model"], details["doc_budget"]) == (
        N_SCENES,
        "exact",
        "starter",
        64,
    )
    assert runner.invoke(app, ["index", "list", "--data-dir", str(built)]).output.split() == ["shapes"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "missing", "--text", "x"], "no index named 'missing'"),
        (["search", "shapes"], "empty query"),
        (["search", "shapes", "--text", "   "], "empty query"),
        (["search", "shapes", "--image", "/nonexistent/x.png"], "image file not found: /nonexistent/x.png"),
        (["search", "shapes", "--text", "x", "--query-budget", "17"], "query_budget=17 is out of range"),
        (["index", "build", "shapes", "--input", "/nonexistent"], "collection not found: /nonexistent"),
        (["index", "info", "bad name!"], "not valid"),
    ],
)
def test_bad_input_gets_a_clear_error(built, args, message):
    result = runner.invoke(app, [*args, "--data-dir", str(built)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_resuming_with_other_settings_or_another_model_is_refused(built, collection, tmp_path):
    result = runner.invoke(app, [*build_args("shapes", collection, "qdrant-edge"), "--data-dir", str(built)])
    assert result.exit_code == 2
    assert "--backend 'qdrant-edge' (the index has 'exact')" in " ".join(result.output.split())
    other_model = tmp_path / "other"
    shutil.copytree(demo_collection().parent / "starter", other_model)
    head = other_model / "head" / "config.json"
    head.write_text(head.read_text() + " ")  # any change to the model's files changes its fingerprint
    result = runner.invoke(
        app, ["search", "shapes", "--text", "x", "--model", str(other_model), "--data-dir", str(built)]
    )
    assert result.exit_code == 2
    assert "is a different model" in " ".join(result.output.split())


def test_jsonl_collection_reports_and_skips_bad_lines(tmp_path):
    images = demo_collection() / "scenes"
    lines = [
        json.dumps({"id": "a", "image": str(images / "scene-01.png"), "payload": {"k": 1}}),
        "{not json",
        json.dumps({"id": "b", "text": "a small red square", "instruction": "Represent the caption."}),
        json.dumps({"id": "c", "image": "missing.png"}),
        json.dumps({"id": "d", "colour": "red"}),
        json.dumps(["a list"]),
        json.dumps({"text": "no id: gets its line number"}),
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    data_dir = tmp_path / "data"
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            "mixed",
            "--input",
            str(tmp_path / "items.jsonl"),
            "--backend",
            "exact",
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "added 3, already indexed 0, skipped 4" in output
    for reason in (
        "items.jsonl:2",
        "not valid JSON",
        "items.jsonl:4",
        "image file not found",
        "items.jsonl:5",
        "unknown keys ['colour']",
        "items.jsonl:6",
    ):
        assert reason in output
    with Index.open("mixed", data_dir=data_dir) as index:
        assert index.store.contains(["a", "b", "c", "line-7"]) == [True, True, False, True]
        assert index.search("a small red square", top_k=3)[0].id in {"a", "b", "line-7"}


def test_delete_removes_the_index(tmp_path, collection):
    data_dir = tmp_path / "data"
    assert runner.invoke(app, [*build_args("gone", collection, "exact"), "--data-dir", str(data_dir)]).exit_code == 0
    result = runner.invoke(app, ["index", "delete", "gone", "--yes", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert not (data_dir / "gone").exists()
    assert runner.invoke(app, ["index", "list", "--data-dir", str(data_dir)]).output.strip() == ""


def test_data_dir_environment_variable(monkeypatch, tmp_path):
    from mmcascade.index import default_data_dir

    monkeypatch.setenv("MMCASCADE_DATA_DIR", str(tmp_path / "here"))
    assert default_data_dir() == tmp_path / "here"
    monkeypatch.delenv("MMCASCADE_DATA_DIR")
    monkeypatch.delenv("MMCASCADE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "mmcascade" / "indexes"
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "cache"))  # the one cache root moves indexes too
    assert default_data_dir() == tmp_path / "cache" / "indexes"
    assert os.environ.get("MMCASCADE_DATA_DIR") is None


def test_demo_indexes_the_bundled_collection_and_finds_the_expected_images(tmp_path):
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "added 56, already indexed 0, skipped 0" in result.output
    assert result.output.count("found first") >= 3  # 4 of 4 with the committed starter model
    again = runner.invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert "added 0, already indexed 56" in again.output


def test_an_image_over_the_pixel_limit_is_skipped_and_listed_and_refused_as_a_query(tmp_path, huge_png):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in (1, 2, 3):
        shutil.copy(demo_collection() / "scenes" / f"scene-{index:02d}.png", folder / f"scene-{index:02d}.png")
    huge_png(folder / "huge.png")  # 30000x30000 in its header, a few bytes on disk
    data_dir = tmp_path / "data"
    args = ["index", "build", "photos", "--input", str(folder), "--backend", "exact", "--data-dir", str(data_dir)]
    for _ in range(2):  # a re-run skips it again instead of crashing
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        output = " ".join(result.output.split())
        assert "skipped 1" in output and "huge.png" in output and "over the limit" in output
    with Index.open("photos", data_dir=data_dir) as index:
        assert index.count() == 3
    search = runner.invoke(app, ["search", "photos", "--image", str(folder / "huge.png"), "--data-dir", str(data_dir)])
    assert search.exit_code == 2
    assert "30000x30000" in " ".join(search.output.split()) and "Traceback" not in search.output
