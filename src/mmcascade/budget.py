"""The one cost object: what a search or an evaluation may spend.

A :class:`Budget` names every knob that trades quality for cost, in the order the data flows:

- ``trace_tokens``: the query reasoner's trace (Think-Then-Embed), used when a reasoner is asked for;
- ``query_vectors`` x ``document_vectors``: the Matryoshka prefixes scored by MaxSim (``"4x8"``);
- ``retrieve_k`` (K): the candidates stage 1 returns;
- ``rerank_k`` (k) and ``think_tokens``: how many of them the reranker judges, and its reasoning per pair.

Search (:class:`mmcascade.search.Cascade`), evaluation (:func:`mmcascade.evaluation.harness.run_eval`)
and both CLIs take the same object; ``Budget.parse("4x8")`` reads the vector part from text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: the largest reasoning budget anything accepts (query traces, reranker reasoning, served max_tokens)
MAX_TOKEN_BUDGET = 32_768
#: the query reasoner's trace budget when none is given
DEFAULT_TRACE_TOKENS = 256
#: MetaEmbed's nested groups (query x document vectors): the evaluation default
MATRYOSHKA_BUDGETS = "1x1,2x4,4x8,8x16,16x64"


@dataclass(frozen=True)
class Budget:
    """What a search may spend (every field validated on construction, errors name the field).

    Args:
        query_vectors: query vectors scored (a Matryoshka prefix; None: all the model makes).
        document_vectors: document vectors per document (None: all). An index stores a fixed number, so a
            search may only name the index's own; an evaluation scores any prefix of the cached vectors.
        retrieve_k: K, the documents stage 1 returns.
        rerank_k: k, how many of the first K the reranker scores (0: no reranking).
        think_tokens: the reranker's reasoning budget per (query, document) pair (0: judge directly).
        trace_tokens: the query reasoner's trace budget (Think-Then-Embed; only spent when a reasoner is used).
    """

    query_vectors: int | None = None
    document_vectors: int | None = None
    retrieve_k: int = 100
    rerank_k: int = 0
    think_tokens: int = 0
    trace_tokens: int = DEFAULT_TRACE_TOKENS

    def __post_init__(self) -> None:
        for name in ("query_vectors", "document_vectors"):
            value = getattr(self, name)
            if value is not None and not _is_int_at_least(value, 1):
                raise ValueError(f"Budget.{name} must be a positive int or None; got {value!r}")
        if not _is_int_at_least(self.retrieve_k, 1):
            raise ValueError(f"Budget.retrieve_k (K) must be a positive int; got {self.retrieve_k!r}")
        if not _is_int_at_least(self.rerank_k, 0):
            raise ValueError(f"Budget.rerank_k (k) must be an int >= 0; got {self.rerank_k!r}")
        if self.rerank_k > self.retrieve_k:
            raise ValueError(
                f"Budget.rerank_k (k={self.rerank_k}) is larger than retrieve_k (K={self.retrieve_k}): the reranker "
                "can only rerank what retrieval returns; raise retrieve_k or lower rerank_k"
            )
        check_think_tokens(self.think_tokens)
        check_token_budget(self.trace_tokens, "Budget.trace_tokens (the query reasoner's trace budget)", minimum=1)

    # ----------------------------------------------------------------- text
    @classmethod
    def parse(cls, text: str, **knobs: Any) -> Budget:
        """``"4x8"`` -> ``Budget(query_vectors=4, document_vectors=8, **knobs)``; either side may be ``all``."""
        query, separator, document = text.strip().partition("x")
        try:
            if not separator:
                raise ValueError
            return cls(query_vectors=_vectors(query), document_vectors=_vectors(document), **knobs)
        except ValueError as error:
            detail = f" ({error})" if str(error) else ""
            raise ValueError(
                f"budget {text!r} must look like QxD with positive ints or 'all', e.g. 4x8{detail}"
            ) from None

    @classmethod
    def parse_many(cls, text: str, **knobs: Any) -> list[Budget]:
        """Comma-separated :meth:`parse`: ``"1x1,2x4,4x8"``; a repeated budget is an error."""
        budgets = [cls.parse(part, **knobs) for part in text.split(",")]
        labels = [budget.label for budget in budgets]
        if len(set(labels)) != len(labels):
            raise ValueError(f"budgets repeat: {text!r}")
        return budgets

    @property
    def label(self) -> str:
        """``"4x8"`` (``"all"`` for a side without a limit): the folder name of an evaluation's results."""
        return f"{self.query_vectors or 'all'}x{self.document_vectors or 'all'}"

    # ----------------------------------------------------------------- checks against a model
    def fits(self, query_vectors: int, document_vectors: int) -> bool:
        """Whether a model making this many query and document vectors can spend this budget."""
        return (self.query_vectors or 0) <= query_vectors and (self.document_vectors or 0) <= document_vectors

    def check_fits(self, query_vectors: int, document_vectors: int) -> Budget:
        """This budget, or a ValueError naming it and the model's vector counts."""
        if not self.fits(query_vectors, document_vectors):
            raise ValueError(
                f"budget {self.label} exceeds the model's {query_vectors} query x {document_vectors} document vectors"
            )
        return self

    def with_vectors(self, query_vectors: int | None, document_vectors: int | None) -> Budget:
        return replace(self, query_vectors=query_vectors, document_vectors=document_vectors)


def default_budgets(query_vectors: int, document_vectors: int, **knobs: Any) -> list[Budget]:
    """MetaEmbed's groups (:data:`MATRYOSHKA_BUDGETS`) that fit a model with these vector counts."""
    return [
        budget
        for budget in Budget.parse_many(MATRYOSHKA_BUDGETS, **knobs)
        if budget.fits(query_vectors, document_vectors)
    ]


def check_token_budget(value: Any, what: str, *, minimum: int = 0) -> int:
    """A reasoning budget as an int in ``minimum..MAX_TOKEN_BUDGET``; the error names ``what``."""
    if not _is_int_at_least(value, minimum) or value > MAX_TOKEN_BUDGET:
        raise ValueError(f"{what} must be an int in {minimum}..{MAX_TOKEN_BUDGET}; got {value!r}")
    return value


def check_think_tokens(think_tokens: Any) -> int:
    """The reranker's reasoning budget as an int in ``0..MAX_TOKEN_BUDGET`` (0: judge without reasoning)."""
    return check_token_budget(think_tokens, "think_tokens (the reranker's reasoning budget)")


def _vectors(text: str) -> int | None:
    text = text.strip()
    if text == "all":
        return None
    if not text.isdigit():
        raise ValueError
    return int(text)


def _is_int_at_least(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum
