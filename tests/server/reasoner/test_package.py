"""The server's layout: what importing it needs, the old module's alias, and the reasoner capabilities it reads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import mmcascade.server
import mmcascade.server.reasoner as reasoner_server
import mmcascade.server.reasoner_app as alias
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner, TokenCounter
from mmcascade.rerank.local import NextTokenScorer
from mmcascade.server.reasoner import PromptBatcher


class PlainReasoner(Reasoner):
    model_id = "plain"

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        return ["ok"] * len(prompts)


class CountingReasoner(PlainReasoner):
    def count_tokens(self, text: str) -> int:
        return len(text)


def test_importing_the_server_package_needs_no_fastapi() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; import mmcascade.server; "
        "assert 'torch' not in sys.modules, 'mmcascade.server imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_entry_and_alias_are_the_same_objects() -> None:
    assert mmcascade.server.create_reasoner_app is reasoner_server.create_reasoner_app
    for name in reasoner_server.__all__:
        assert getattr(alias, name) is getattr(reasoner_server, name), name
    assert alias.NextTokenScorer is NextTokenScorer
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        mmcascade.server.missing  # noqa: B018


def test_batcher_reads_declared_capabilities() -> None:
    plain, counting = PromptBatcher(PlainReasoner()), PromptBatcher(CountingReasoner())
    assert not isinstance(PlainReasoner(), TokenCounter) and isinstance(CountingReasoner(), TokenCounter)
    assert (plain.counts_tokens, counting.counts_tokens) == (False, True)
    assert plain.scorer is None and counting.scorer is None  # no local generative backbone to score with
