"""Budgets for evaluation: ``"1x1,2x4,4x8,8x16,16x64"`` -> ``[(1, 1), (2, 4), ...]`` (query x document vectors)."""

from __future__ import annotations

DEFAULT_BUDGETS = ((1, 1), (2, 4), (4, 8), (8, 16), (16, 64))


def parse_budgets(text: str) -> list[tuple[int, int]]:
    """Parse ``QxD`` pairs separated by commas; each side a positive int."""
    budgets = []
    for part in text.split(","):
        part = part.strip()
        query, separator, document = part.partition("x")
        if not separator or not query.isdigit() or not document.isdigit() or int(query) < 1 or int(document) < 1:
            raise ValueError(f"budget {part!r} must look like QxD with positive ints, e.g. 4x8 (in {text!r})")
        budgets.append((int(query), int(document)))
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"budgets repeat: {text!r}")
    return budgets


def check_budgets(budgets: list[tuple[int, int]], query_vectors: int, document_vectors: int) -> None:
    """Every budget must fit the model's vectors; the error names the first one that does not."""
    for query, document in budgets:
        if query > query_vectors or document > document_vectors:
            raise ValueError(
                f"budget {query}x{document} exceeds the model's {query_vectors} query x {document_vectors} "
                "document vectors"
            )


def budget_label(budget: tuple[int, int] | None) -> str:
    """Folder name of a budget's results: ``"4x8"``, or ``"single"`` for single-vector models."""
    return "single" if budget is None else f"{budget[0]}x{budget[1]}"
