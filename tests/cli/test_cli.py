"""The console script, driven in-process through typer's runner."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from typer.testing import CliRunner

from mmcascade import __version__
from mmcascade.cli.main import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_quickstart_embeds_and_scores_at_three_budgets(tmp_path: Path) -> None:
    result = runner.invoke(app, ["quickstart", "--tiny", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "queries (3, 4, 64)  documents (3, 16, 64)" in result.output
    for budget in ("(1,1)", "(2,8)", "(4,16)"):
        assert f"MaxSim at budget {budget}" in result.output
    assert (tmp_path / "tiny-qwen2-vl" / "model.safetensors").is_file()


def test_embed_writes_safetensors(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "dot.png"
    from PIL import Image

    Image.new("RGB", (40, 40), "red").save(image)
    out = tmp_path / "vectors.safetensors"
    result = runner.invoke(
        app,
        ["embed", "--model", str(qwen2_vl_checkpoint), "--text", "a dot", "--image", str(image), "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    vectors = load_file(str(out))["vectors"]
    assert vectors.shape == (1, 64)  # (n_vectors, dim): one vector for the default head
    assert abs(float(vectors.norm()) - 1.0) < 1e-5


def test_embed_reports_user_errors_without_traceback(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["embed", "--model", str(tmp_path / "missing"), "--text", "x"])
    assert result.exit_code == 2 and "model folder not found" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["embed", "--model", str(qwen2_vl_checkpoint), "--image", str(tmp_path / "no.png")])
    assert result.exit_code == 2 and "image file not found" in result.output
    result = runner.invoke(app, ["embed", "--model", str(qwen2_vl_checkpoint), "--text", "x", "--side", "both"])
    assert result.exit_code == 2 and "--side must be" in result.output
