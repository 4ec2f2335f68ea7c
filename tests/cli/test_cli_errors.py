"""Every expected failure of the CLI is one ``error: ...`` line and exit code 2, never a traceback.

One test per class of failure (missing files, bad paths, bad model names, unreachable servers, bad configs,
bad option values, missing extras, OS errors), each driven through the console script's command table; and
`index build` refusing bad settings before it makes anything (`index list` stays empty, no folder is left).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mmcascade.cli.demo import demo_collection
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.cli.main import app
from mmcascade.index.exact import ExactBackend
from mmcascade.reasoner import ReasoningError, remote

runner = CliRunner()


def assert_user_error(result, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line (on stderr) holding every fragment; returns it."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_usage_error(result, option: str) -> None:
    """A value refused by the option's own bounds: click's usage error, naming the option (exit 2)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert option in result.output and "Budget." not in result.output


def closed_port_url() -> str:
    """An http://127.0.0.1:PORT/v1 URL nothing listens on (connection refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(remote, "MAX_BACKOFF_S", 0.0)  # retries of a refused connection without waiting


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    for number in (1, 2, 3):
        for suffix in (".png", ".txt"):
            shutil.copy(demo_collection() / "scenes" / f"scene-{number:02d}{suffix}", folder)
    return folder


@pytest.fixture(scope="module")
def built(scenes, tmp_path_factory) -> Path:
    """The data dir of index ``shapes`` (3 scenes, exact backend, starter model)."""
    data_dir = tmp_path_factory.mktemp("data")
    args = ["index", "build", "shapes", "--input", str(scenes), "--backend", "exact", "--data-dir", str(data_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return data_dir


# ----------------------------------------------------------------- unreachable servers
def test_an_unreachable_reasoner_url_is_one_line(built, no_backoff, monkeypatch, tmp_path):
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "cache"))
    url = closed_port_url()
    args = ["search", "shapes", "--think", "--reasoner-url", url, "--text", "x", "--data-dir", str(built)]
    assert_user_error(runner.invoke(app, args), "could not reach", url)


def test_an_unreachable_reranker_url_is_one_line(built, no_backoff, monkeypatch, tmp_path):
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "cache"))
    url = closed_port_url()
    args = ["search", "shapes", "--rerank", "2", "--reranker-url", url, "--text", "x", "--data-dir", str(built)]
    assert_user_error(runner.invoke(app, args), "could not reach", url)


def test_an_unreachable_teacher_is_one_line(no_backoff, monkeypatch, tmp_path):
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "cache"))
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"text": "a red circle"}) + "\n")
    url = closed_port_url()
    args = ["reasoner", "traces", "--input", str(items), "--out", str(tmp_path / "traces.jsonl")]
    result = runner.invoke(app, [*args, "--reasoner", "teacher", "--reasoner-url", url])
    assert_user_error(result, "could not reach", url)


def test_an_unreachable_qdrant_server_leaves_no_index(scenes, tmp_path):
    data_dir = tmp_path / "data"
    url = closed_port_url().removesuffix("/v1")
    args = ["index", "build", "remote", "--input", str(scenes), "--backend", "qdrant"]
    result = runner.invoke(app, [*args, "--backend-option", f"url={url}", "--data-dir", str(data_dir)])
    assert_user_error(result, f"cannot reach the Qdrant server at {url}", "Connection refused")
    assert_no_index(data_dir, "remote")


# ----------------------------------------------------------------- missing files, bad paths, bad models
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "shapes", "--image", "/nonexistent/x.png"], "image file not found: /nonexistent/x.png"),
        (["index", "build", "new", "--input", "/nonexistent"], "collection not found: /nonexistent"),
        (["index", "add", "missing", "--input", "/nonexistent"], "collection not found: /nonexistent"),
        (["index", "info", "missing"], "no index named 'missing'"),
        (["index", "delete", "missing", "--yes"], "no index named 'missing'"),
        (["index", "info", "../up"], "is not valid"),
    ],
)
def test_missing_files_and_bad_names(built, args, message):
    assert_user_error(runner.invoke(app, [*args, "--data-dir", str(built)]), message)


@pytest.mark.parametrize(
    "args",
    [
        ["quickstart", "--model", "/nonexistent/model"],
        ["embed", "--model", "/nonexistent/model", "--text", "x"],
        ["eval", "mmeb.yaml", "--model", "/nonexistent/model", "--out", "out"],
        ["serve", "reasoner", "--model", "/nonexistent/model"],
    ],
)
def test_a_bad_model_name(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mmeb.yaml").write_text(
        "Toy:\n  dataset_parser: image_cls\n  dataset_name: Toy\n  image_root: images/\n  eval_type: local\n"
        "  annotations: annotations\n"
    )
    assert_user_error(runner.invoke(app, args), "model folder not found: /nonexistent/model")


def test_missing_records_and_configs(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    mine = ["mine", "--train", missing, "--out", str(tmp_path / "out.jsonl"), "--model", "m", "--reranker", "r"]
    assert_user_error(runner.invoke(app, mine), "records file not found")
    traces = ["reasoner", "traces", "--input", missing, "--out", str(tmp_path / "t.jsonl"), "--templated-teacher"]
    assert_user_error(runner.invoke(app, traces), "not found")
    for command in ("embedder", "reasoner", "reranker"):
        result = runner.invoke(app, ["train", command, "-c", str(tmp_path / "nope.yaml")])
        assert_user_error(result, "config file not found")


def test_a_bad_config_is_one_line_even_when_the_parser_says_more(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("training: [1, 2\n")
    assert_user_error(runner.invoke(app, ["train", "embedder", "-c", str(config)]), "is not valid YAML", "line 1")
    assert_user_error(runner.invoke(app, ["eval", str(config), "--out", str(tmp_path / "out")]), "is not valid YAML")


def test_writing_where_nothing_can_be_written(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    embed = ["embed", "--model", "/nonexistent", "--text", "x"]
    assert_user_error(
        runner.invoke(app, [*embed, "--output", str(tmp_path / "no" / "v.safetensors")]), "does not exist"
    )
    assert_user_error(runner.invoke(app, [*embed, "--output", str(tmp_path)]), "is a folder")
    assert_user_error(runner.invoke(app, ["eval", "--out", str(a_file)]), f"--out {a_file} is a file")
    assert_user_error(runner.invoke(app, ["index", "list", "--data-dir", str(a_file)]), "is a file")


def test_an_os_error_is_one_line(scenes, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    args = ["index", "build", "x", "--input", str(scenes), "--backend", "exact", "--data-dir", str(a_file)]
    assert_user_error(runner.invoke(app, args), "Not a directory", str(a_file))


# ----------------------------------------------------------------- bad option values name the option
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query-budget", "17"], "--query-budget 17 is out of range"),
        (["--rerank", "3", "--retrieve-k", "2"], "--rerank 3 is larger than --retrieve-k 2"),
        (["--think", "--think-tokens", "0"], "--think-tokens 0"),
        (["--rerank", "4"], "--rerank 4 is larger than index 'shapes'"),
        (["--think", "--reasoner", "/nonexistent/reasoner"], "model folder not found"),
        (["--think", "--task", "weird", "--reasoner-url", "http://127.0.0.1:1/v1"], "unknown task 'weird'"),
    ],
)
def test_search_option_errors_name_the_option(built, args, message):
    result = runner.invoke(app, ["search", "shapes", "--text", "x", *args, "--data-dir", str(built)])
    line = assert_user_error(result, message)
    assert "Budget." not in line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["search", "shapes", "--text", "x", "--query-budget", "0"], "--query-budget"),
        (["search", "shapes", "--text", "x", "--rerank", "1", "--think-tokens", "99999"], "--think-tokens"),
        (["mine", "--train", "t", "--out", "o", "--model", "m", "--reranker", "r", "--think-tokens", "99999"], "--think-tokens"),
        (["reasoner", "traces", "--input", "i", "--out", "o", "--templated-teacher", "--think-tokens", "0"], "--think-tokens"),
    ],
)  # fmt: skip
def test_out_of_range_ints_are_refused_by_the_option(built, args, option):
    assert_usage_error(runner.invoke(app, args), option)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budgets", ""], "--budgets '' has an empty entry"),
        (["--budgets", "1x1,,4x8"], "--budgets '1x1,,4x8' has an empty entry"),
        (["--datasets", ""], "--datasets '' has an empty entry"),
        (["--think", "--think-tokens", "0"], "--think-tokens 0"),
    ],
)
def test_eval_refuses_empty_lists_before_any_work(args, message, tmp_path):
    result = runner.invoke(app, ["eval", "--model", "/nonexistent/model", "--out", str(tmp_path / "out"), *args])
    assert_user_error(result, message)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------- index build: refused before anything exists
def assert_no_index(data_dir: Path, name: str) -> None:
    listed = runner.invoke(app, ["index", "list", "--data-dir", str(data_dir)])
    assert listed.exit_code == 0 and listed.output.split() == []
    assert not (data_dir / name).exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--captions", "weird"], "--captions must be 'embed' or 'payload'; got 'weird'"),
        (["--backend", "nope"], "unknown index backend 'nope'"),
        (["--backend-option", "prefetch=-1"], "Qdrant option prefetch must be an int >= 1; got -1"),
        (["--backend-option", "colour=red"], "unknown Qdrant option(s) colour"),
        (["--backend", "exact", "--backend-option", "prefetch=400"], "exact backend: unknown options ['prefetch']"),
        (["--backend", "exact", "--backend-option", "dtype=float8"], "exact backend: dtype must be one of"),
        (["--backend", "qdrant", "--backend-option", "api_key=k"], "api_key needs url"),
        (["--backend-option", "prefetch"], "--backend-option 'prefetch' must look like key=value"),
        (["--backend", "exact", "--doc-budget", "0"], "doc_budget=0 is out of range"),
    ],
)
def test_a_bad_build_setting_leaves_no_index(scenes, tmp_path, options, message):
    data_dir = tmp_path / "data"
    args = ["index", "build", "X", "--input", str(scenes), *options, "--data-dir", str(data_dir)]
    assert_user_error(runner.invoke(app, args), message)
    assert_no_index(data_dir, "X")


def test_a_jsonl_build_refuses_bad_captions_too(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "a", "text": "a red circle"}) + "\n")
    args = ["index", "build", "X", "--input", str(items), "--captions", "weird", "--data-dir", str(tmp_path / "data")]
    assert_user_error(runner.invoke(app, args), "--captions must be")
    assert_no_index(tmp_path / "data", "X")


def test_a_store_that_fails_to_create_is_removed(scenes, tmp_path, monkeypatch):
    def failing_create(cls, path, spec, **options):
        Path(path).mkdir(parents=True)
        (Path(path) / "partial").write_text("half-made")
        raise ValueError("the disk said no")

    monkeypatch.setattr(ExactBackend, "create", classmethod(failing_create))
    data_dir = tmp_path / "data"
    args = ["index", "build", "X", "--input", str(scenes), "--backend", "exact", "--data-dir", str(data_dir)]
    assert_user_error(runner.invoke(app, args), "the disk said no")
    assert_no_index(data_dir, "X")


# ----------------------------------------------------------------- exit_on_user_error itself
def run_raising(error: BaseException):
    command = typer.Typer()

    @command.command()
    def fail() -> None:
        with exit_on_user_error():
            raise error

    return runner.invoke(command, [])


class ConnectError(Exception):
    """Stands in for httpx.ConnectError: a network library's error caused by an OSError."""


ConnectError.__module__ = "httpx._exceptions"


def test_expected_failures_are_one_line_with_a_hint():
    missing = ModuleNotFoundError("No module named 'peft'", name="peft")
    assert_user_error(run_raising(missing), "No module named 'peft'", "pip install 'mmcascade[train]'")
    hinted = ImportError("the starter needs gguf: pip install 'mmcascade[starter]'", name="gguf")
    assert_user_error(run_raising(hinted), "pip install 'mmcascade[starter]'")
    denied = PermissionError(13, "Permission denied", "/data/indexes")
    assert_user_error(run_raising(denied), "error: Permission denied: /data/indexes")
    assert_user_error(run_raising(ReasoningError("reasoner 'm' failed on batch 1/1", kept=0)), "failed on batch")
    network = ConnectError("[Errno 111] Connection refused")
    network.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert_user_error(run_raising(network), "could not connect", "Connection refused")
    assert_user_error(run_raising(ValueError("first line\n  second line")), "error: first line second line")


def test_bugs_keep_their_traceback():
    for bug in (
        KeyError("oops"),
        RuntimeError("a shape mismatch"),
        ModuleNotFoundError("No module named 'mmcascade.gone'", name="mmcascade.gone"),
        ConnectError("not caused by the network"),
    ):
        result = run_raising(bug)
        assert result.exit_code == 1 and result.exception is bug
