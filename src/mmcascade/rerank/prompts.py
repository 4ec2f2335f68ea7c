"""Reranking prompts: a YAML template turned into a (query, candidate) chat prompt.

The bundled template is ``mmcascade/assets/rerank_templates/relevance.yaml``; a user passes their own
file with ``template=``. A template file holds::

    name: relevance
    description: what the template is for
    system: |        # the system message: how to judge, and to end with "Answer: yes" or "Answer: no"
      ...
    user: |          # a format string with {query_instruction}, {query} and {candidate}
      Task: {query_instruction}
      Query: {query}
      Candidate: {candidate}

``{query}`` and ``{candidate}`` expand to the item's text followed by one ``<image>`` per image (an
item whose text already places its images keeps them there). The query's images come first in the
prompt's image list, then the candidate's. A line whose placeholders all expand to nothing (a query
without an instruction, say) is left out.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcascade.data.items import IMAGE_PLACEHOLDER, Item, as_item
from mmcascade.reasoner.base import Prompt

PLACEHOLDERS: tuple[str, ...] = ("query_instruction", "query", "candidate")
REQUIRED_PLACEHOLDERS: tuple[str, ...] = ("query", "candidate")
KEYS: tuple[str, ...] = ("name", "description", "system", "user")
BUNDLED_TEMPLATE = Path(__file__).resolve().parent.parent / "assets" / "rerank_templates" / "relevance.yaml"


@dataclass(frozen=True)
class RerankTemplate:
    """A validated reranking template; ``source`` is the file it was read from."""

    name: str
    system: str
    user: str
    description: str = ""
    source: str = "<memory>"


def load_rerank_template(path: str | os.PathLike | None = None) -> RerankTemplate:
    """The template in ``path`` (default: the bundled ``relevance.yaml``); errors name the file and key."""
    import yaml

    path = Path(path) if path is not None else BUNDLED_TEMPLATE
    if not path.is_file():
        raise FileNotFoundError(f"rerank template not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a valid YAML text file: {error}") from error
    return rerank_template_from_dict(data, source=str(path))


def rerank_template_from_dict(data: Any, *, source: str = "<memory>") -> RerankTemplate:
    """Validate a template mapping: exactly the known keys, string values, known and required placeholders."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a mapping with keys {list(KEYS)}; got {type(data).__name__}")
    unknown = sorted(str(key) for key in data if key not in KEYS)
    missing = [key for key in KEYS if key not in data]
    if unknown or missing:
        raise ValueError(f"{source}: unknown key(s) {unknown}, missing key(s) {missing}; a template has {list(KEYS)}")
    for key in KEYS:
        if not isinstance(data[key], str) or (key != "description" and not data[key].strip()):
            raise ValueError(f"{source}: key {key!r} must be a non-empty string")
        if IMAGE_PLACEHOLDER in data[key]:
            raise ValueError(
                f"{source}: key {key!r} contains a literal {IMAGE_PLACEHOLDER}; images come from the items"
            )
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(data["user"]) if field is not None}
    except ValueError as error:
        raise ValueError(f"{source}: key 'user' is not a valid format string ({error})") from error
    bad = sorted(used - set(PLACEHOLDERS))
    absent = [name for name in REQUIRED_PLACEHOLDERS if name not in used]
    if bad or absent:
        raise ValueError(
            f"{source}: key 'user' uses unknown placeholder(s) {bad} or lacks {absent}; "
            f"known placeholders are {list(PLACEHOLDERS)}"
        )
    return RerankTemplate(
        name=data["name"].strip(),
        system=data["system"].strip(),
        user=data["user"].strip("\n"),
        description=data["description"].strip(),
        source=source,
    )


def render_rerank_prompt(query: Any, candidate: Any, template: RerankTemplate) -> Prompt:
    """The prompt asking whether ``candidate`` matches ``query`` (items, or dicts/strings ``as_item`` takes)."""
    query, candidate = as_item(query), as_item(candidate)
    values = {
        "query_instruction": (query.instruction or "").strip(),
        "query": _describe(query),
        "candidate": _describe(candidate),
    }
    lines = []
    for line in template.user.split("\n"):
        fields = [field for _, field, _, _ in string.Formatter().parse(line) if field is not None]
        if fields and not any(values[field] for field in fields):
            continue
        lines.append(line.format(**values))
    return Prompt(system=template.system, user="\n".join(lines).strip(), images=(*query.images, *candidate.images))


def _describe(item: Item) -> str:
    """The item's text with its images: placed by its own ``<image>`` markers, else one per image at the end."""
    text = (item.text or "").strip()
    if IMAGE_PLACEHOLDER in text:
        if text.count(IMAGE_PLACEHOLDER) != len(item.images):
            raise ValueError(
                f"an item's text has {text.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholder(s) "
                f"but {len(item.images)} image(s)"
            )
        return text
    return " ".join(part for part in (text, " ".join([IMAGE_PLACEHOLDER] * len(item.images))) if part)
