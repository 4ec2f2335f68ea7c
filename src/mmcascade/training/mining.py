"""Hard-negative mining and false-negative filtering with a reasoning reranker: its feedback to the retriever.

For every training record the retriever fetches the top-N candidates from the corpus of every item in the
records file (MaxSim), the reranker judges each of them and the record's positive (P(yes)), and
:func:`select_negatives` decides:

- a labelled positive is never a negative;
- a likely **false negative** (an unlabelled candidate the reranker finds relevant) is dropped and reported:
  its score is ``>= threshold``, or, with a ``margin``, ``>= positive_score - margin`` (within ``margin`` of
  the positive's score on the P(yes) scale, absolute, not a percentage);
- the **hard negatives** are the remaining candidates judged non-relevant, highest retrieval rank first,
  up to ``n_negatives``.

:func:`mine` runs the whole loop on a records file and writes a new one (same format) to retrain the
retriever on. Reranker scores go to a state JSONL as soon as each query is scored, so a killed run resumes
without judging a pair twice and ends with the output of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mmcascade.data.items import Item, load_image
from mmcascade.data.records import TrainingRecord, read_records, write_records
from mmcascade.rerank.base import check_think_tokens
from mmcascade.scoring import maxsim_topk
from mmcascade.training.mining_state import ScoreState
from mmcascade.utils.fs import write_text_atomically

if TYPE_CHECKING:
    from mmcascade.embedder import Embedder
    from mmcascade.rerank.base import Reranker

FalseNegativeRule = Literal["threshold", "margin"]

#: two P(yes) values closer than this are equal: a score on a boundary (after float rounding) is on it
TIE_TOLERANCE = 1e-9
_KEY_CHARS = 32  # 128-bit content keys: no collision in any corpus that fits a records file


# --------------------------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class MinedCandidate:
    """One retrieved candidate of one query.

    Args:
        id: the candidate's identifier (any string unique within the query's candidates).
        rank: 1-based retrieval rank (1 = the retriever's best).
        retrieval_score: the retriever's similarity (MaxSim); informative only, the rank sets the order.
        rerank_score: the reranker's P(yes), in [0, 1].
        is_positive: whether the candidate is a labelled positive of the query.
    """

    id: str
    rank: int
    retrieval_score: float
    rerank_score: float
    is_positive: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"MinedCandidate.id must be a non-empty string; got {self.id!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"candidate {self.id!r}: rank must be an int >= 1 (1 = best); got {self.rank!r}")
        if not _is_number(self.retrieval_score) or not math.isfinite(self.retrieval_score):
            raise ValueError(
                f"candidate {self.id!r}: retrieval_score must be a finite number; got {self.retrieval_score!r}"
            )
        _check_probability(f"candidate {self.id!r}: rerank_score", self.rerank_score)


@dataclass(frozen=True)
class FalseNegative:
    """A candidate dropped as a likely false negative, and the rule that caught it."""

    candidate: MinedCandidate
    rule: FalseNegativeRule


@dataclass(frozen=True)
class MiningDecision:
    """What :func:`select_negatives` decided for one query: hard negatives in retrieval order, false negatives."""

    hard_negatives: tuple[MinedCandidate, ...]
    false_negatives: tuple[FalseNegative, ...]


def check_mining_settings(*, n_negatives: int, threshold: float, margin: float | None) -> None:
    """Raise ValueError naming the bad setting: ``n_negatives >= 1``, ``threshold`` in [0, 1], ``margin >= 0``."""
    if isinstance(n_negatives, bool) or not isinstance(n_negatives, int) or n_negatives < 1:
        raise ValueError(f"n_negatives (hard negatives per query) must be an int >= 1; got {n_negatives!r}")
    if not _is_number(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"threshold must be a P(yes) in [0, 1] (candidates the reranker scores at or above it are treated as "
            f"false negatives); got {threshold!r}"
        )
    if margin is not None and (not _is_number(margin) or not math.isfinite(margin) or margin < 0):
        raise ValueError(
            f"margin must be a number >= 0 on the P(yes) scale (e.g. 0.1), or None to turn the rule off; got {margin!r}"
        )


def select_negatives(
    candidates: Sequence[MinedCandidate],
    *,
    n_negatives: int,
    threshold: float,
    margin: float | None = None,
    positive_score: float | None = None,
) -> MiningDecision:
    """Split one query's retrieved candidates into hard negatives and likely false negatives.

    Candidates are taken in retrieval order (``rank`` ascending; equal ranks keep their input order).
    Labelled positives are skipped. An unlabelled candidate is a false negative when
    ``rerank_score >= threshold`` (rule ``"threshold"``) or, when ``margin`` and ``positive_score`` are both
    given, when ``rerank_score >= positive_score - margin`` (rule ``"margin"``; a candidate scored above the
    positive is caught too). Scores within :data:`TIE_TOLERANCE` of a boundary count as on it, i.e. relevant.
    Every other candidate is judged non-relevant; the first ``n_negatives`` of them are the hard negatives.
    When every candidate is judged relevant, there are no hard negatives.
    """
    check_mining_settings(n_negatives=n_negatives, threshold=threshold, margin=margin)
    if positive_score is not None:
        _check_probability("positive_score", positive_score)
    seen: set[str] = set()
    for candidate in candidates:
        if not isinstance(candidate, MinedCandidate):
            raise ValueError(f"candidates must be MinedCandidate objects; got {type(candidate).__name__}")
        if candidate.id in seen:
            raise ValueError(f"candidate id {candidate.id!r} appears twice; pass each candidate once")
        seen.add(candidate.id)
    hard_negatives: list[MinedCandidate] = []
    false_negatives: list[FalseNegative] = []
    for candidate in sorted(candidates, key=lambda candidate: candidate.rank):  # stable: ties keep input order
        if candidate.is_positive:
            continue
        rule = _false_negative_rule(candidate.rerank_score, threshold, margin, positive_score)
        if rule is not None:
            false_negatives.append(FalseNegative(candidate, rule))
        elif len(hard_negatives) < n_negatives:
            hard_negatives.append(candidate)
    return MiningDecision(tuple(hard_negatives), tuple(false_negatives))


def _false_negative_rule(
    score: float, threshold: float, margin: float | None, positive_score: float | None
) -> FalseNegativeRule | None:
    if score >= threshold - TIE_TOLERANCE:
        return "threshold"
    if margin is not None and positive_score is not None and score >= positive_score - margin - TIE_TOLERANCE:
        return "margin"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _check_probability(name: str, value: Any) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]; got {value!r}")


# --------------------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class MiningCounts:
    """What a mining run produced (identical for a resumed and an uninterrupted run)."""

    queries: int  # records written
    distinct_queries: int
    corpus_items: int
    mined_negatives: int
    original_negatives_kept: int
    false_negatives_filtered: int
    records_without_mined_negatives: int
    positives_below_threshold: int  # labelled positives the reranker judged non-relevant: worth a look
    records_skipped: int


@dataclass(frozen=True)
class MiningResult:
    """Where :func:`mine` wrote its output, report and state, what it produced and how many pairs it judged."""

    out_path: Path
    report_path: Path
    state_path: Path
    counts: MiningCounts
    pairs_scored: int  # judged by the reranker in this run
    pairs_from_state: int  # read back from the state file of an earlier, interrupted run


@dataclass
class _Prepared:
    """A valid record and the content keys of its query (with instruction), positive and negatives."""

    record: TrainingRecord
    query_key: str
    positive_key: str
    negative_keys: tuple[str, ...]


@dataclass
class _Corpus:
    """Every distinct candidate item of the file (first occurrence kept), the records, and skipped lines."""

    items: dict[str, Item] = field(default_factory=dict)
    queries: dict[str, Item] = field(default_factory=dict)
    records: list[_Prepared] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def mine(
    records_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    retriever: Embedder,
    reranker: Reranker,
    retriever_id: str,
    top_n: int = 20,
    n_negatives: int = 3,
    threshold: float = 0.5,
    margin: float | None = None,
    think_tokens: int = 0,
    keep_original_negatives: bool = False,
    state_path: str | os.PathLike | None = None,
    report_path: str | os.PathLike | None = None,
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> MiningResult:
    """Mine hard negatives for every record of ``records_path`` and write them as a new records file.

    The corpus is every distinct positive and negative in the file (deduplicated by text and image content;
    the first occurrence is the one encoded and written). Each query retrieves its ``top_n`` candidates by
    MaxSim (single-vector embedders: cosine), the reranker judges them and the record's positive, and
    :func:`select_negatives` decides. Queries with the same text, image and instruction share retrieval and
    judgements, and each other's positives count as labelled positives (multi-positive data).

    Args:
        records_path: the input records JSONL (:mod:`mmcascade.data.records`).
        out_path: the output records JSONL: each record's negatives are its mined hard negatives (then its
            original negatives minus the false negatives, with ``keep_original_negatives``); query, positive
            and meta are kept. Written atomically.
        retriever: the embedder that retrieves the candidates.
        reranker: the judge.
        retriever_id: names the retriever in the state file's settings (e.g. its folder), so scores computed
            over another retriever's candidates are never reused.
        top_n: candidates retrieved and judged per query.
        n_negatives: hard negatives kept per query (fewer when the reranker finds too many relevant).
        threshold: P(yes) at or above which an unlabelled candidate is a false negative.
        margin: with a value, a candidate scoring ``>= positive_score - margin`` is a false negative too.
        think_tokens: the reranker's reasoning budget (0: judge without reasoning).
        keep_original_negatives: also keep the record's own negatives; they are judged as well, and those the
            rules flag as false negatives are dropped.
        state_path: the resume file of reranker scores (default ``<out stem>.scores.jsonl`` next to the output).
        report_path: the JSON report (default ``<out stem>.report.json``): false negatives per query, counts,
            skipped lines, settings. Written atomically.
        batch_size: items per encoding batch.
        log: called with progress lines.

    Records that cannot be used (malformed JSON, missing or unreadable images) are skipped and listed in the
    report; the run fails only when no record is usable.
    """
    say = log or (lambda line: None)
    check_mining_settings(n_negatives=n_negatives, threshold=threshold, margin=margin)
    think_tokens = check_think_tokens(think_tokens)
    for name, value in (("top_n", top_n), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if not isinstance(retriever_id, str) or not retriever_id:
        raise ValueError("retriever_id must name the retriever (e.g. its folder or Hub id)")
    paths = _resolve_paths(records_path, out_path, state_path, report_path)
    records_path, out_path, state_path, report_path = paths

    corpus = _prepare_corpus(records_path)
    if not corpus.records:
        raise ValueError(
            f"{records_path}: no record can be mined ({len(corpus.skipped)} skipped, e.g. line "
            f"{corpus.skipped[0]['line']}: {corpus.skipped[0]['reason']}); fix the records"
        )
    say(f"{len(corpus.records)} records, {len(corpus.queries)} distinct queries, {len(corpus.items)} corpus items")
    settings = {
        "retriever": retriever_id,
        "reranker": reranker.model_id,
        "template": _text_digest(reranker.template.system, reranker.template.user),
        "top_n": top_n,
        "think_tokens": think_tokens,
        "input_sha256": _file_digest(records_path),
    }
    with ScoreState.open(state_path, settings) as state:
        pending = [key for key in corpus.queries if key not in state.retrieved]
        if len(pending) < len(corpus.queries):
            say(f"resuming: {len(corpus.queries) - len(pending)} queries already judged in {state_path}")
        fresh_retrieval = _retrieve(retriever, corpus, top_n, batch_size, say) if pending else {}
        pairs_scored, pairs_from_state = _score_all(
            reranker, corpus, state, fresh_retrieval, keep_original_negatives, think_tokens, say
        )
        records, counts, false_negatives = _decide_all(
            corpus, state, n_negatives, threshold, margin, keep_original_negatives
        )
    write_records(out_path, records)
    report = {
        "input": str(records_path),
        "output": str(out_path),
        "state": str(state_path),
        "settings": {
            **settings,
            "n_negatives": n_negatives,
            "threshold": threshold,
            "margin": margin,
            "keep_original_negatives": keep_original_negatives,
        },
        "counts": asdict(counts),
        "skipped": corpus.skipped,
        "false_negatives": false_negatives,
        "run": {"pairs_scored": pairs_scored, "pairs_from_state": pairs_from_state},
    }
    _write_json_atomically(report_path, report)
    return MiningResult(out_path, report_path, state_path, counts, pairs_scored, pairs_from_state)


def _resolve_paths(
    records_path: str | os.PathLike,
    out_path: str | os.PathLike,
    state_path: str | os.PathLike | None,
    report_path: str | os.PathLike | None,
) -> tuple[Path, Path, Path, Path]:
    records = Path(os.path.abspath(Path(records_path).expanduser()))
    out = Path(os.path.abspath(Path(out_path).expanduser()))
    stem = out.with_suffix("") if out.suffix else out
    state = Path(os.path.abspath(Path(state_path).expanduser())) if state_path else Path(f"{stem}.scores.jsonl")
    report = Path(os.path.abspath(Path(report_path).expanduser())) if report_path else Path(f"{stem}.report.json")
    named = {"records file": records, "output": out, "state file": state, "report": report}
    seen: dict[Path, str] = {}
    for name, path in named.items():
        if path in seen:
            raise ValueError(f"the {name} and the {seen[path]} are the same file ({path}); give them different paths")
        seen[path] = name
    return records, out, state, report


# --------------------------------------------------------------------------------------------- the corpus
def _prepare_corpus(records_path: Path) -> _Corpus:
    """Read the valid records, check their images decode, and key every item by content."""
    record_set = read_records(records_path, check_images=True, on_error="skip")
    corpus = _Corpus(skipped=[{"line": problem.line, "reason": problem.reason} for problem in record_set.problems])
    digests: dict[str, str | ValueError] = {}
    for record in record_set:
        try:
            query_key = _item_key(record.query, digests, with_instruction=True)
            positive_key = _item_key(record.positive, digests)
            negative_keys = tuple(_item_key(negative, digests) for negative in record.negatives)
        except ValueError as error:
            corpus.skipped.append({"line": record.line, "reason": str(error)})
            continue
        corpus.queries.setdefault(query_key, record.query)
        for key, item in zip((positive_key, *negative_keys), (record.positive, *record.negatives), strict=True):
            corpus.items.setdefault(key, item)
        corpus.records.append(_Prepared(record, query_key, positive_key, negative_keys))
    corpus.skipped.sort(key=lambda entry: entry["line"])
    return corpus


def _item_key(item: Item, digests: dict[str, str | ValueError], *, with_instruction: bool = False) -> str:
    """A content key: text and image bytes (and the instruction, for queries); raises on an unreadable image."""
    images = [_checked_image_digest(image, digests) for image in item.images]
    parts = [item.text, images, item.instruction if with_instruction else None]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:_KEY_CHARS]


def _checked_image_digest(image: Any, digests: dict[str, str | ValueError]) -> str:
    name = os.fspath(image)
    if name not in digests:
        try:
            content = Path(name).read_bytes()
            load_image(content)  # decode once here, so an unreadable file skips its record instead of the run
            digests[name] = hashlib.sha256(content).hexdigest()
        except (OSError, ValueError) as error:
            digests[name] = ValueError(f"image {name} cannot be read ({error}); fix or remove it")
    result = digests[name]
    if isinstance(result, ValueError):
        raise result
    return result


def _retrieve(
    retriever: Embedder, corpus: _Corpus, top_n: int, batch_size: int, say: Callable[[str], None]
) -> dict[str, list[tuple[str, float]]]:
    """Every query's top-``top_n`` corpus keys and MaxSim scores, best first (equal scores: corpus order)."""
    keys = list(corpus.items)
    say(f"encoding {len(keys)} corpus items and {len(corpus.queries)} queries")
    # Every query is encoded, even on resume, so a query's batch (and its vectors) is that of an uninterrupted run.
    documents = retriever.encode_documents(list(corpus.items.values()), batch_size=batch_size)  # (n_d, D, dim)
    queries = retriever.encode_queries(list(corpus.queries.values()), batch_size=batch_size)  # (n_q, Q, dim)
    scores, indices = maxsim_topk(queries, documents, min(top_n, len(keys)))  # (n_q, k), (n_q, k)
    retrieved = {}
    for query_key, row_scores, row_indices in zip(corpus.queries, scores.tolist(), indices.tolist(), strict=True):
        ranked = sorted(zip(row_scores, row_indices, strict=True), key=lambda pair: (-pair[0], pair[1]))
        retrieved[query_key] = [(keys[index], float(score)) for score, index in ranked]
    return retrieved


# --------------------------------------------------------------------------------------------- judging
def _score_all(
    reranker: Reranker,
    corpus: _Corpus,
    state: ScoreState,
    fresh_retrieval: dict[str, list[tuple[str, float]]],
    keep_original_negatives: bool,
    think_tokens: int,
    say: Callable[[str], None],
) -> tuple[int, int]:
    """Judge every pair not yet in the state, one reranker call per query, each appended as soon as it is done.

    Returns ``(pairs judged now, pairs read from the state)``.
    """
    needed: dict[str, list[str]] = {key: [] for key in corpus.queries}
    for prepared in corpus.records:
        needed[prepared.query_key].append(prepared.positive_key)
        if keep_original_negatives:
            needed[prepared.query_key].extend(prepared.negative_keys)
    scored = reused = 0
    every = max(1, len(needed) // 20)
    for position, (query_key, extra) in enumerate(needed.items(), start=1):
        new_retrieval = fresh_retrieval.get(query_key) if query_key not in state.retrieved else None
        retrieved = new_retrieval if new_retrieval is not None else state.retrieved[query_key]
        wanted = dict.fromkeys([key for key, _ in retrieved] + extra)
        missing = [key for key in wanted if (query_key, key) not in state.scores]
        reused += len(wanted) - len(missing)
        if missing or new_retrieval is not None:
            query = corpus.queries[query_key]
            results = (
                reranker.score(
                    [query] * len(missing), [corpus.items[key] for key in missing], think_tokens=think_tokens
                )
                if missing
                else []
            )
            if len(results) != len(missing):
                raise ValueError(f"the reranker returned {len(results)} scores for {len(missing)} pairs")
            state.append(query_key, new_retrieval, dict(zip(missing, results, strict=True)))
            scored += len(missing)
        if position % every == 0 or position == len(needed):
            say(f"judged {position}/{len(needed)} queries ({scored} pairs in this run)")
    return scored, reused


def _decide_all(
    corpus: _Corpus,
    state: ScoreState,
    n_negatives: int,
    threshold: float,
    margin: float | None,
    keep_original_negatives: bool,
) -> tuple[list[TrainingRecord], MiningCounts, list[dict[str, Any]]]:
    """The output records, the counts and the report's false-negative entries, in record order."""
    positives: dict[str, set[str]] = {}
    for prepared in corpus.records:
        positives.setdefault(prepared.query_key, set()).add(prepared.positive_key)
    records, false_negatives = [], []
    mined = kept = without_mined = positives_below = 0
    for prepared in corpus.records:
        query_key, labelled = prepared.query_key, positives[prepared.query_key]
        positive_score = state.scores[(query_key, prepared.positive_key)].score
        candidates = [
            MinedCandidate(key, rank, score, state.scores[(query_key, key)].score, is_positive=key in labelled)
            for rank, (key, score) in enumerate(state.retrieved[query_key], start=1)
        ]
        decision = select_negatives(
            candidates, n_negatives=n_negatives, threshold=threshold, margin=margin, positive_score=positive_score
        )
        report = _FalseNegativeReport(prepared, corpus, state, positive_score)
        false_negatives += [
            report.entry(found.candidate.id, found.rule, found.candidate.rank) for found in decision.false_negatives
        ]
        negatives = [corpus.items[candidate.id] for candidate in decision.hard_negatives]
        if keep_original_negatives:
            taken = {candidate.id for candidate in decision.hard_negatives}
            taken |= {found.candidate.id for found in decision.false_negatives} | labelled
            for key, item in zip(prepared.negative_keys, prepared.record.negatives, strict=True):
                if key in taken:
                    continue
                taken.add(key)
                rule = _false_negative_rule(state.scores[(query_key, key)].score, threshold, margin, positive_score)
                if rule is None:
                    negatives.append(item)
                    kept += 1
                else:
                    false_negatives.append(report.entry(key, rule, rank=None))
        mined += len(decision.hard_negatives)
        without_mined += not decision.hard_negatives
        positives_below += positive_score < threshold - TIE_TOLERANCE
        record = prepared.record
        records.append(TrainingRecord(record.query, record.positive, tuple(negatives), record.meta))
    counts = MiningCounts(
        queries=len(records),
        distinct_queries=len(corpus.queries),
        corpus_items=len(corpus.items),
        mined_negatives=mined,
        original_negatives_kept=kept,
        false_negatives_filtered=len(false_negatives),
        records_without_mined_negatives=without_mined,
        positives_below_threshold=positives_below,
        records_skipped=len(corpus.skipped),
    )
    return records, counts, false_negatives


@dataclass
class _FalseNegativeReport:
    """Builds the report entries of one record's false negatives."""

    prepared: _Prepared
    corpus: _Corpus
    state: ScoreState
    positive_score: float

    def entry(self, key: str, rule: FalseNegativeRule, rank: int | None) -> dict[str, Any]:
        """``rank`` None: an original negative the retriever did not return in the top-N."""
        judged = self.state.scores[(self.prepared.query_key, key)]
        return {
            "line": self.prepared.record.line,
            "query": _describe(self.prepared.record.query),
            "candidate": _describe(self.corpus.items[key]),
            "score": judged.score,
            "positive_score": self.positive_score,
            "rule": rule,
            "rank": rank,
            "reasoning": judged.reasoning,
        }


def _describe(item: Item) -> dict[str, Any]:
    side: dict[str, Any] = {}
    if item.text is not None:
        side["text"] = item.text
    if item.images:
        side["image"] = os.fspath(item.images[0]) if len(item.images) == 1 else [os.fspath(i) for i in item.images]
    if item.instruction is not None:
        side["instruction"] = item.instruction
    return side


# --------------------------------------------------------------------------------------------- small helpers
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _text_digest(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:_KEY_CHARS]


def _write_json_atomically(path: Path, payload: Any) -> None:
    write_text_atomically(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
