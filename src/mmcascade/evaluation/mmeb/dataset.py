"""What every MMEB-V2 reader produces: queries, their candidates and labels, one dataset at a time.

This mirrors VLM2Vec's normalised records (``query_text/query_image``, ``cand_names``, ``label_name``,
``rel_scores``) with items in this project's item format, so the harness never sees a reader's format.

Items are plain dicts as :func:`mmcascade.data.items.as_item` takes them: ``{"text", "image" |
"images", "instruction"}``, with image *paths* (strings) resolved against the media root; a video is a
list of sampled frame paths under ``"images"``. Nothing is decoded by the readers.

Local snapshot layout (what ``scripts/build_mini_mmeb.py`` writes and the readers read; the Hugging
Face layouts are read too, see :mod:`mmcascade.evaluation.mmeb.readers`)::

    <root>/mmeb.yaml                               dataset configs (VLM2Vec's yaml keys, plus ours)
    <root>/annotations/<Name>/test.jsonl           image tasks: one MMEB record per line
    <root>/annotations/<Name>/queries.jsonl        visual documents (BEIR): query-id, query
    <root>/annotations/<Name>/corpus.jsonl         corpus-id, image (path relative to image_root)
    <root>/annotations/<Name>/qrels.jsonl          query-id, corpus-id, score
    <root>/image-tasks/...                         images, paths as in the records
    <root>/visdoc-tasks/<Name>/...                 document page images
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mmcascade.evaluation.mmeb.config import DatasetConfig

Modality = Literal["image", "video", "visdoc"]
EvalType = Literal["local", "global"]
MAIN_METRIC: dict[str, str] = {"image": "hit@1", "video": "hit@1", "visdoc": "ndcg_linear@5"}


@dataclass(frozen=True)
class EvalQuery:
    """One query: its item, the candidates it is ranked against (local) and the relevant ones.

    Args:
        query_id: a stable id (record index or the BEIR ``query-id``).
        item: the query as an item dict (text / image paths / instruction).
        candidate_names: ``local`` datasets: this query's own candidate list (names may repeat, as in
            VLM2Vec); ``global`` datasets: None (ranked against every candidate of the dataset).
        labels: names of the relevant candidates (de-duplicated, first-seen order).
        rel_scores: graded relevance of each label, aligned with ``labels``; None = binary (all 1).
    """

    query_id: str
    item: dict[str, Any]
    candidate_names: tuple[str, ...] | None
    labels: tuple[str, ...]
    rel_scores: tuple[int, ...] | None = None


@dataclass
class EvalDataset:
    """A dataset ready to encode and score.

    ``candidates`` maps each candidate name to its item, de-duplicated by name in first-seen order (the
    pool of every query's candidates plus the corpus), as VLM2Vec does. ``problems`` lists the records
    the reader skipped and why (missing media, a label not among the candidates, empty lists).
    """

    name: str
    modality: Modality
    meta_task: str
    eval_type: EvalType
    queries: list[EvalQuery]
    candidates: dict[str, dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_config(
        cls,
        config: DatasetConfig,
        queries: list[EvalQuery],
        candidates: dict[str, dict[str, Any]],
        problems: list[str],
    ) -> EvalDataset:
        """A reader's result for the dataset ``config`` describes."""
        return cls(
            name=config.name,
            modality=config.modality,
            meta_task=config.meta_task,
            eval_type=config.eval_type,  # type: ignore[arg-type]  # checked by load_configs
            queries=queries,
            candidates=candidates,
            problems=problems,
        )

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC[self.modality]
