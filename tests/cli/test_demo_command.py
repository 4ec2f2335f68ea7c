"""What the demo tells a new user to type next works from a new shell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmcascade.cli import demo


def test_the_suggested_command_is_the_bare_name_only_when_it_is_on_path(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / ".venv" / "bin" / "mmcascade"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)  # a new shell: the venv is not activated
    assert demo.installed_command() == ".venv/bin/mmcascade"
    monkeypatch.setattr(demo.shutil, "which", lambda name: str(script))
    assert demo.installed_command() == "mmcascade"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # outside the project: the absolute path, not ../
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    assert demo.installed_command() == str(script.resolve())


@pytest.mark.parametrize("argv0", ["-c", ""])
def test_a_python_caller_gets_the_module_form(argv0: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    assert demo.installed_command() == f"{sys.executable} -m mmcascade"
