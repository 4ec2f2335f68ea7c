"""ECR prompt templates: one YAML file per task kind, rendered into :class:`~mmcascade.reasoner.base.Prompt`.

The bundled templates live in ``mmcascade/assets/reasoner_templates/<kind>.yaml``. A user's
folder (``template_dir=`` or ``$MMCASCADE_TEMPLATES``) overrides them by file name, and may add
templates of its own kinds. A template file holds::

    kind: retrieval                 # must match the file name
    description: what the template is for
    system: |                       # the system message, used as written
      ... think about what the query needs for retrieval, answer as <think>...</think> Answer: ...
    user: |                         # a format string with {instruction}, {text} and {images}
      {images}
      Task: {instruction}
      Query: {text}

``{images}`` expands to one ``<image>`` per image of the item (nothing when the item's text
already places its images with ``<image>`` placeholders). A line whose placeholders all expand to
nothing (an item without an instruction, say) is left out of the prompt.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcascade.data.items import IMAGE_PLACEHOLDER, Item, as_item
from mmcascade.reasoner.base import Prompt

#: the task kinds that have a bundled template
KINDS: tuple[str, ...] = ("classification", "vqa", "retrieval", "grounding", "document")
#: MMEB meta-tasks -> task kinds
META_TASKS: dict[str, str] = {
    "CLS": "classification",
    "QA": "vqa",
    "RET": "retrieval",
    "VG": "grounding",
    "VisDoc": "document",
}
PLACEHOLDERS: tuple[str, ...] = ("instruction", "text", "images")
#: placeholders every user template must use, so no part of the item is silently dropped
REQUIRED_PLACEHOLDERS: tuple[str, ...] = ("text", "images")
REQUIRED_KEYS: tuple[str, ...] = ("kind", "system", "user", "description")
TEMPLATES_ENV = "MMCASCADE_TEMPLATES"
BUNDLED_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "assets" / "reasoner_templates"
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class PromptTemplate:
    """A validated prompt template; ``source`` is the file it was read from."""

    kind: str
    system: str
    user: str
    description: str
    source: str = "<memory>"


def task_kind(name_or_meta_task: str) -> str:
    """The template kind for a kind name or an MMEB meta-task (``CLS``, ``QA``, ``RET``, ``VG``, ``VisDoc``)."""
    if not isinstance(name_or_meta_task, str):
        raise ValueError(f"task must be a str; got {type(name_or_meta_task).__name__}")
    name = name_or_meta_task.strip()
    if name.lower() in KINDS:
        return name.lower()
    for meta_task, kind in META_TASKS.items():
        if name.lower() == meta_task.lower():
            return kind
    raise ValueError(
        f"unknown task {name_or_meta_task!r}: use one of the kinds {list(KINDS)} "
        f"or an MMEB meta-task {list(META_TASKS)}"
    )


def load_template(kind: str, *, template_dir: str | os.PathLike | None = None) -> PromptTemplate:
    """The template for ``kind`` (a kind or an MMEB meta-task).

    A ``<kind>.yaml`` in ``template_dir`` (default: ``$MMCASCADE_TEMPLATES``, when set) overrides
    the bundled one; such a folder may also hold templates of new kinds.
    """
    user_dir = _user_template_dir(template_dir)
    try:
        resolved = task_kind(kind)
    except ValueError as error:
        if user_dir is None or not isinstance(kind, str) or _find_file(user_dir, kind.strip()) is None:
            hint = f" (no {kind!r} template in {user_dir} either)" if user_dir is not None else ""
            raise ValueError(f"{error}{hint}") from error
        resolved = kind.strip()
    for directory in (user_dir, BUNDLED_TEMPLATE_DIR):
        path = _find_file(directory, resolved) if directory is not None else None
        if path is not None:
            template = load_template_file(path)
            if template.kind != resolved:
                raise ValueError(f"{path}: key 'kind' is {template.kind!r} but the file is the {resolved!r} template")
            return template
    raise FileNotFoundError(
        f"no template for {resolved!r} in {BUNDLED_TEMPLATE_DIR}: the package data is missing; reinstall mmcascade"
    )


def load_template_file(path: str | os.PathLike) -> PromptTemplate:
    """Read and validate one template file; errors name the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"template file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from error
    return template_from_dict(data, source=str(path))


def template_from_dict(data: Any, *, source: str = "<memory>") -> PromptTemplate:
    """Validate a template mapping (as read from YAML): required keys, str values, known placeholders."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a mapping with keys {list(REQUIRED_KEYS)}; got {type(data).__name__}")
    unknown = sorted(str(key) for key in data if key not in REQUIRED_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; a template has exactly {list(REQUIRED_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ValueError(f"{source}: missing key {key!r} (a template needs {list(REQUIRED_KEYS)})")
        value = data[key]
        if not isinstance(value, str):
            raise ValueError(f"{source}: key {key!r} must be a string; got {type(value).__name__}")
        if key != "description" and not value.strip():
            raise ValueError(f"{source}: key {key!r} is empty")
    for key in ("system", "user"):
        if IMAGE_PLACEHOLDER in data[key]:
            raise ValueError(
                f"{source}: key {key!r} contains a literal {IMAGE_PLACEHOLDER}; "
                "place images with the {images} placeholder in 'user'"
            )
    used = _placeholders(data["user"], where=f"{source}: key 'user'")
    missing = [name for name in REQUIRED_PLACEHOLDERS if name not in used]
    if missing:
        raise ValueError(
            f"{source}: key 'user' must use the placeholder(s) {['{' + name + '}' for name in missing]} "
            "so the item's text and images reach the reasoner"
        )
    return PromptTemplate(
        kind=data["kind"].strip(),
        system=data["system"].strip(),
        user=data["user"].strip("\n"),
        description=data["description"].strip(),
        source=source,
    )


def render_prompt(item: Item, template: PromptTemplate) -> Prompt:
    """The prompt asking the reasoner for an ECR trace about ``item``; images pass through in order."""
    item = as_item(item)
    text = (item.text or "").strip()
    images = tuple(item.images)
    # an item whose text already places its images keeps them there
    image_field = "" if IMAGE_PLACEHOLDER in text else "\n".join([IMAGE_PLACEHOLDER] * len(images))
    values = {"instruction": (item.instruction or "").strip(), "text": text, "images": image_field}
    lines = []
    for line in template.user.split("\n"):
        fields = [field for _, field, _, _ in string.Formatter().parse(line) if field is not None]
        if fields and not any(values[field] for field in fields):
            continue  # e.g. "Task: {instruction}" for an item without an instruction
        lines.append(line.format(**values))
    user = "\n".join(lines).strip()
    n_placeholders = user.count(IMAGE_PLACEHOLDER)
    if n_placeholders != len(images):
        raise ValueError(
            f"the {template.kind!r} prompt ({template.source}) has {n_placeholders} {IMAGE_PLACEHOLDER} "
            f"placeholder(s) but the item has {len(images)} image(s); remove {IMAGE_PLACEHOLDER} from the "
            "item's instruction, or check the template's {images} placeholder"
        )
    return Prompt(system=template.system, user=user, images=images)


def _placeholders(template: str, *, where: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(
            f"{where} is not a valid format string ({error}); write a literal brace as {{{{ or }}}}"
        ) from error
    used = set()
    for _, field, format_spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            raise ValueError(
                f"{where} uses an unknown placeholder {{{field}}}; known placeholders are "
                f"{['{' + name + '}' for name in PLACEHOLDERS]}"
            )
        if format_spec or conversion:
            raise ValueError(f"{where}: write the placeholder as {{{field}}}, without a conversion or format spec")
        used.add(field)
    return used


def _user_template_dir(template_dir: str | os.PathLike | None) -> Path | None:
    if template_dir is not None:
        origin = "template_dir"
    else:
        template_dir = os.environ.get(TEMPLATES_ENV) or None
        origin = f"${TEMPLATES_ENV}"
    if template_dir is None:
        return None
    path = Path(template_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{origin} {path} is not a folder of <kind>.yaml templates")
    return path


def _find_file(directory: Path, kind: str) -> Path | None:
    if not kind or "/" in kind or "\\" in kind:
        return None
    for suffix in _SUFFIXES:
        path = directory / f"{kind}{suffix}"
        if path.is_file():
            return path
    return None
