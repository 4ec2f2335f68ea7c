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
        (["search", "shapes", "--text", "x", "--query-budget", "17"], "--query-budget 17 is out of range"),
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


def test_add_reports_a_changed_image_and_replaces_it_only_when_asked(collection, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for number in range(1, 5):
        shutil.copy(collection / f"scene-{number:02d}.png", folder / f"scene-{number:02d}.png")
    data_dir = tmp_path / "data"
    base = ["--input", str(folder), "--batch-size", "2", "--captions", "payload", "--data-dir", str(data_dir)]
    assert runner.invoke(app, ["index", "build", "scenes", "--backend", "exact", *base]).exit_code == 0
    shutil.copy(collection / "scene-10.png", folder / "scene-03.png")  # another image under an indexed name
    caption = (collection / "scene-10.txt").read_text()

    def top_ids() -> list[str]:
        result = runner.invoke(app, ["search", "scenes", "--text", caption, "--json", "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        return [hit["id"] for hit in json.loads(result.stdout)]

    before = top_ids()
    added = runner.invoke(app, ["index", "add", "scenes", *base])
    assert added.exit_code == 0, added.output
    output = " ".join(added.output.split())
    assert "added 0, already indexed 3, skipped 0" in output
    assert (
        "1 documents changed since they were indexed: scene-03.png (re-run with --replace-changed to re-encode them)"
        in output
    )
    assert top_ids() == before  # reported only: the old vectors stay

    replaced = runner.invoke(app, ["index", "add", "scenes", "--replace-changed", *base])
    assert replaced.exit_code == 0, replaced.output
    assert "added 0, replaced 1 changed, already indexed 3" in " ".join(replaced.output.split())
    assert top_ids()[0] == "scene-03.png"  # the new content is what is found


def test_jsonl_lines_without_ids_get_one_warning(tmp_path):
    lines = [{"id": "kept", "text": "a red circle"}, {"text": "a blue square"}, {"text": "a green star"}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["index", "build", "ids", "--input", str(tmp_path / "items.jsonl"), "--backend", "exact"]
    result = runner.invoke(app, [*args, "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert '2 JSONL lines have no "id": their ids are their line numbers (line-N)' in output
    assert output.count("JSONL lines have no") == 1


def test_search_reranks_past_a_moved_image_and_says_so(collection, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for number in range(1, 4):
        for suffix in (".png", ".txt"):
            shutil.copy(collection / f"scene-{number:02d}{suffix}", folder / f"scene-{number:02d}{suffix}")
    data_dir = tmp_path / "data"
    build = ["index", "build", "moved", "--input", str(folder), "--backend", "exact", "--captions", "payload"]
    assert runner.invoke(app, [*build, "--data-dir", str(data_dir)]).exit_code == 0
    (folder / "scene-02.png").unlink()  # moved away after indexing
    search = ["search", "moved", "--text", "a scene", "--rerank", "3", "--json", "--data-dir", str(data_dir)]
    result = runner.invoke(app, search)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    (warned,) = [hit for hit in hits if "warning" in hit]
    assert warned["id"] == "scene-02.png" and warned["rank"] == warned["retrieval_rank"]
    assert warned["rerank_score"] is None and "image file not found" in warned["warning"]
    assert all(hit["rerank_score"] is not None for hit in hits if hit is not warned)
    assert "warning: not reranked: document 'scene-02.png': image file not found" in " ".join(result.stderr.split())


# Holds a qdrant-edge index as `mmcascade index build` does (the write lock and the store open) until stdin closes.
HOLD_FOR_WRITING = """
import sys
from pathlib import Path
from mmcascade.index.backends import get_backend
from mmcascade.index.base import StoreSpec
from mmcascade.index.folders import STORE_DIR
from mmcascade.index.lock import write_lock
from mmcascade.index.manifest import IndexManifest

folder = Path(sys.argv[1])
manifest = IndexManifest.load(folder)
spec = StoreSpec(dim=manifest.dim, num_vectors=manifest.doc_budget)
with write_lock(folder, manifest.name), get_backend(manifest.backend).open(folder / STORE_DIR, spec):
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_an_index_being_written_by_another_process_gets_a_clear_error_not_the_engines(tmp_path, monkeypatch):
    (tmp_path / "items.jsonl").write_text(json.dumps({"id": "a", "text": "a red circle"}) + "\n")
    data_dir = tmp_path / "data"
    build = ["index", "build", "busy", "--input", str(tmp_path / "items.jsonl"), "--backend", "qdrant-edge"]
    assert runner.invoke(app, [*build, "--data-dir", str(data_dir)]).exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOR_WRITING, str(data_dir / "busy")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        monkeypatch.setenv("MMCASCADE_LOCK_TIMEOUT", "0.3")
        for command in (["index", "info", "busy"], ["search", "busy", "--text", "a circle"], build):
            result = runner.invoke(app, [*command, "--data-dir", str(data_dir)])
            output = " ".join(result.output.split())
            assert result.exit_code == 2, output
            assert "index 'busy' is being written by another process; wait for it to finish" in output
            assert "WouldBlock" not in output
    finally:
        holder.communicate(timeout=60)  # closes stdin: the holder lets go
    result = runner.invoke(app, ["index", "info", "busy", "--json", "--data-dir", str(data_dir)])
    assert json.loads(result.output)["count"] == 1
