"""The mining state file: reranker scores saved per query as they are computed, so a killed run resumes.

The first line is a header with the settings the scores depend on (model ids, top-N, budget, input digest);
a state file from other settings is refused. Every later line is one judged query, appended, flushed and
fsynced; a last line cut by a kill is dropped on the next open.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mmcascade.rerank.base import RerankScore
from mmcascade.utils.fs import write_text_atomically

STATE_FORMAT = 1
_STATE_MARKER = "mmcascade_mining_state"


class ScoreState:
    """The resume file: a settings header, then one JSON line per judged query (appended, flushed, fsynced).

    Line format: ``{"query": KEY, "retrieved": [[KEY, score], ...] | null, "scores": [[KEY, p, yes, no, reasoning]]}``;
    a query's later lines add pairs (e.g. its original negatives) to earlier ones.
    """

    def __init__(self, path: Path, handle: IO[str]):
        self.path = path
        self.handle = handle
        self.retrieved: dict[str, list[tuple[str, float]]] = {}
        self.scores: dict[tuple[str, str], RerankScore] = {}

    @classmethod
    @contextmanager
    def open(cls, path: Path, settings: dict[str, Any]) -> Iterator[ScoreState]:
        lines = _read_state_lines(path, settings)
        with path.open("a", encoding="utf-8") as handle:
            state = cls(path, handle)
            for number, line in enumerate(lines, start=2):
                state._load(line, number)
            yield state

    def append(self, query_key: str, retrieved: list[tuple[str, float]] | None, scores: dict[str, RerankScore]) -> None:
        line = {
            "query": query_key,
            "retrieved": [[key, score] for key, score in retrieved] if retrieved is not None else None,
            "scores": [[key, s.score, s.yes_logit, s.no_logit, s.reasoning] for key, s in scores.items()],
        }
        self.handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self._remember(query_key, retrieved, scores)

    def _load(self, text: str, number: int) -> None:
        try:
            line = json.loads(text)
            retrieved = line["retrieved"]
            scores = {
                key: RerankScore(score=float(p), yes_logit=float(yes), no_logit=float(no), reasoning=reasoning)
                for key, p, yes, no, reasoning in line["scores"]
            }
            query_key = line["query"]
            retrieved = [(key, float(score)) for key, score in retrieved] if retrieved is not None else None
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{self.path}:{number} is not a mining state line ({error}); delete the file to start over"
            ) from None
        self._remember(query_key, retrieved, scores)

    def _remember(
        self, query_key: str, retrieved: list[tuple[str, float]] | None, scores: dict[str, RerankScore]
    ) -> None:
        if retrieved is not None:
            self.retrieved[query_key] = retrieved
        for key, score in scores.items():
            self.scores[(query_key, key)] = score


def _read_state_lines(path: Path, settings: dict[str, Any]) -> list[str]:
    """The state's score lines after checking its header; a missing file is created with one.

    A last line cut by a kill (no newline) is removed, so the run appends after the last complete query.
    """
    header = {_STATE_MARKER: STATE_FORMAT, "settings": settings}
    content = path.read_bytes() if path.is_file() else b""
    if content and not content.endswith(b"\n"):
        cut = content.rfind(b"\n") + 1
        if cut == 0 and not content.startswith(b'{"' + _STATE_MARKER.encode()):
            raise ValueError(f"{path} is not a mining state file; delete it or pass another state path (--state)")
        content = content[:cut]
        with path.open("r+b") as handle:
            handle.truncate(cut)
    if not content:
        write_text_atomically(path, json.dumps(header) + "\n")
        return []
    first, *lines = content.decode("utf-8").splitlines()
    try:
        found = json.loads(first)
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, dict) or found.get(_STATE_MARKER) != STATE_FORMAT:
        raise ValueError(f"{path} is not a mining state file; delete it or pass another state path (--state)")
    stored = found.get("settings", {})
    differences = [
        f"{name} {stored.get(name)!r} in the file, {value!r} now"
        for name, value in settings.items()
        if stored.get(name) != value
    ]
    if differences:
        raise ValueError(
            f"{path} holds reranker scores from other settings ({'; '.join(differences)}); delete it to start over, "
            "or pass another state path (--state)"
        )
    return [line for line in lines if line.strip()]
