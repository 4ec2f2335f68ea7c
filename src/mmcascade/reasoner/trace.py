"""The embedding-centric reasoning (ECR) trace: the format a reasoner writes, and its parser.

A reasoner is asked to write its free reasoning between ``<think>`` and ``</think>``, then one
short final line that starts with ``Answer:``, the embedding-centric summary of what the query
needs::

    <think>The caption mentions two shapes; the star is left of the circle ...</think>
    Answer: a red star to the left of a blue circle

:func:`parse_trace` turns whatever came back (truncated by the token budget, tags missing,
garbage) into a :class:`Trace` without ever raising; :func:`with_trace` builds the item the
embedder reads: the query's text followed by a line ``Reasoning: ...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from mmcascade.data.items import IMAGE_PLACEHOLDER, Item

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_PREFIX = "Answer:"
#: answers are summaries to embed; longer text is cut here (and at the first blank line)
MAX_ANSWER_CHARS = 400

EmbeddingMode = Literal["answer", "full"]
EMBEDDING_MODES: tuple[str, ...] = ("answer", "full")

_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"[ \t]*<\s*/?\s*think\s*>[ \t]*", re.IGNORECASE)
# "Answer:" at the start of a line, tolerating markdown decoration such as "**Answer:**" or "- Answer:".
_ANSWER_LINE = re.compile(r"(?:^|\n)[ \t>*#_-]*answer[ \t*_]*:[ \t*_]*", re.IGNORECASE)
_ANSWER_ANYWHERE = re.compile(r"\banswer[ \t*_]*:[ \t*_]*", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Trace:
    """A parsed reasoning trace.

    Args:
        raw: the completion as the reasoner returned it ("" when it was not a string).
        think: the free reasoning (between the think tags, or before ``Answer:``).
        answer: the short embedding-centric summary after ``Answer:`` ("" when there is none).
        complete: True when the reasoning was closed and an answer followed; False for
            truncated or malformed completions.
        problem: what was wrong or fixed while parsing (``None`` for a clean trace); several
            problems are joined with "; ".
    """

    raw: str
    think: str
    answer: str
    complete: bool
    problem: str | None = None

    @property
    def empty(self) -> bool:
        """True when the trace holds nothing to embed."""
        return not (self.think or self.answer)

    def embedding_text(self, mode: EmbeddingMode = "answer") -> str:
        """The text the embedder reads: the answer (``"answer"``, falling back to the reasoning when
        there is no answer) or the reasoning followed by the answer (``"full"``)."""
        if mode == "answer":
            return self.answer or self.think
        if mode == "full":
            return "\n".join(part for part in (self.think, self.answer) if part)
        raise ValueError(f"embedding mode must be one of {list(EMBEDDING_MODES)}; got {mode!r}")


def parse_trace(raw: Any) -> Trace:
    """Parse a completion into a :class:`Trace`; never raises.

    * ``<think>...</think>`` then ``Answer: ...``: a complete trace.
    * no ``</think>`` after ``<think>``: truncated by the token budget; the text so far is the
      reasoning, the answer is empty.
    * no ``<think>`` (e.g. a chat template that pre-fills it): the text before ``</think>``, or
      before the ``Answer:`` line, is the reasoning.
    * no ``Answer:`` after ``</think>``: the text after the tag is the answer.
    * repeated or nested tags: the reasoning runs from the first ``<think>`` to the first
      ``</think>``; stray tags are removed from both parts.

    Answers are cut at the first blank line and at :data:`MAX_ANSWER_CHARS` characters.
    """
    try:
        return _parse(raw)
    except Exception as error:  # the contract is "never raises": report instead
        text = raw if isinstance(raw, str) else ""
        return Trace(raw=text, think="", answer="", complete=False, problem=f"could not parse the trace: {error!r}")


def _parse(raw: Any) -> Trace:
    if not isinstance(raw, str):
        return Trace(
            raw="", think="", answer="", complete=False, problem=f"completion is not a str: got {type(raw).__name__}"
        )
    if not raw.strip():
        return Trace(raw=raw, think="", answer="", complete=False, problem="empty completion")

    problems: list[str] = []
    opening = _OPEN.search(raw)
    # the first </think> after the first <think> (or anywhere, when <think> is missing)
    closing = _CLOSE.search(raw, opening.end() if opening else 0)

    if closing is None and opening is not None:
        think = _clean(raw[opening.end() :])
        return Trace(raw=raw, think=think, answer="", complete=False, problem="truncated: no </think>")

    if closing is not None:
        think = _clean(raw[opening.end() if opening else 0 : closing.start()])
        rest = raw[closing.end() :]
        found = _ANSWER_LINE.search(rest) or _ANSWER_ANYWHERE.search(rest)
        if found is not None:
            answer_text = rest[found.end() :]
        else:
            answer_text = rest
            if _clean(rest):
                problems.append("no 'Answer:' line: used the text after </think>")
    else:
        # neither tag: a model that ignored the tags but kept the answer line, or plain text
        # only a line-start "Answer:": free text often says "the answer: ..." mid-sentence
        found = _ANSWER_LINE.search(raw)
        if found is None:
            return Trace(
                raw=raw,
                think=_clean(raw),
                answer="",
                complete=False,
                problem="truncated: no </think> and no 'Answer:' line; kept the text as reasoning",
            )
        think = _clean(raw[: found.start()])
        answer_text = raw[found.end() :]

    answer = _short_answer(answer_text, problems)
    if not answer:
        problems.append("no answer after </think>" if closing is not None else "empty answer")
    return Trace(
        raw=raw,
        think=think,
        answer=answer,
        complete=bool(answer),
        problem="; ".join(problems) or None,
    )


def _clean(text: str) -> str:
    """Text with stray think tags removed and outer whitespace stripped."""
    return _ANY_TAG.sub(" ", text).strip()


def _short_answer(text: str, problems: list[str]) -> str:
    """The answer text up to a further think tag, the first blank line and MAX_ANSWER_CHARS."""
    tag = _ANY_TAG.search(text)
    if tag is not None:
        text = text[: tag.start()]
    text = text.strip()
    blank = _BLANK_LINE.search(text)
    if blank is not None:
        text = text[: blank.start()].rstrip()
        problems.append("answer cut at the first blank line")
    if len(text) > MAX_ANSWER_CHARS:
        cut = text[:MAX_ANSWER_CHARS]
        space = cut.rfind(" ")
        # end on a whole word unless that would throw away much of the answer
        text = (cut[:space] if space > MAX_ANSWER_CHARS * 3 // 4 else cut).rstrip()
        problems.append(f"answer cut at {MAX_ANSWER_CHARS} characters")
    return text.strip("*_ \t\n").strip()


def with_trace(item: Item, trace: Trace, mode: EmbeddingMode = "answer") -> Item:
    """The item the embedder reads: ``item``'s text followed by a line ``Reasoning: <text>``.

    Images and the instruction are kept; an item without text gets just the reasoning line; an
    empty trace returns ``item`` unchanged. The reasoning is written on one line, and any
    ``<image>`` it contains is defused so it cannot be mistaken for an image placeholder.
    """
    reasoning = _WHITESPACE.sub(" ", trace.embedding_text(mode)).strip()
    if not reasoning:
        return item
    reasoning = reasoning.replace(IMAGE_PLACEHOLDER, "[image]")
    line = f"Reasoning: {reasoning}"
    text = f"{item.text.rstrip()}\n{line}" if item.text and item.text.strip() else line
    return Item(text=text, images=item.images, instruction=item.instruction)
