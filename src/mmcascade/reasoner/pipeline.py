"""Items -> ECR traces: render prompts, look them up in the trace cache, generate the misses, parse.

:func:`reason` is the one entry point. Completions are cached under :func:`trace_key`, which
changes whenever anything that shapes the completion changes: the model, the rendered prompt,
the bytes of each image, or the generation settings. The cache is written after every batch,
so a run that fails (or is interrupted) part-way keeps the traces it had already finished.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from mmcascade.data.items import ImageSource, as_items
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.prompts import load_template, render_prompt
from mmcascade.reasoner.trace import Trace, parse_trace

#: bump when the key recipe changes, so old cache entries are not mistaken for new ones
KEY_VERSION = "mmcascade-ecr-trace-v1"
_READ_CHUNK = 1 << 20


@runtime_checkable
class TraceStore(Protocol):
    """What :func:`reason` needs from a cache (``reasoner.cache.TraceCache`` is one)."""

    def get_many(self, keys: Sequence[str]) -> Mapping[str, str]:
        """The cached raw completions for those ``keys`` that are present."""
        ...

    def put_many(self, entries: Mapping[str, str]) -> None:
        """Store raw completions by key (a cache whose ``put_many`` also takes ``model=`` is given the model id)."""
        ...


class ReasoningError(RuntimeError):
    """A batch failed in :func:`reason`; ``kept`` traces (generated earlier in this run) were cached."""

    def __init__(self, message: str, *, kept: int) -> None:
        super().__init__(message)
        self.kept = kept


def image_digest(image: ImageSource) -> str:
    """sha256 of an image's content: the file's bytes for a path, the raw bytes, or PNG bytes for a PIL image."""
    digest = hashlib.sha256()
    if isinstance(image, bytes):
        digest.update(image)
    elif isinstance(image, Image.Image):
        buffer = io.BytesIO()
        # store-only PNG: lossless (mode, size, palette and pixels all count) and quick to write
        image.save(buffer, format="PNG", compress_level=0)
        digest.update(buffer.getvalue())
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(_READ_CHUNK), b""):
                digest.update(chunk)
    else:
        raise ValueError(f"an image must be a file path, bytes or a PIL.Image; got {type(image).__name__}")
    return digest.hexdigest()


def trace_key(model_id: str, prompt: Prompt, settings: GenerationSettings) -> str:
    """The cache key of one completion: sha256 of the model id, the prompt's system and user text,
    the content of each image (in order) and ``settings.key()``."""
    digest = hashlib.sha256()
    parts = [KEY_VERSION, model_id, prompt.system, prompt.user, *map(image_digest, prompt.images), settings.key()]
    for part in parts:
        encoded = part.encode("utf-8")
        # length-prefixed, so no two different part lists hash the same bytes
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


def reason(
    reasoner: Reasoner,
    items: Iterable[Any],
    *,
    task: str = "retrieval",
    settings: GenerationSettings | None = None,
    cache: TraceStore | None = None,
    template_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Trace]:
    """One parsed ECR trace per item, in order.

    Args:
        reasoner: writes completions; its ``model_id`` goes into the cache keys.
        items: :class:`~mmcascade.data.items.Item` objects (or anything ``as_items`` accepts).
        task: a template kind (``retrieval``, ``classification``, ...) or an MMEB meta-task (``RET``, ``CLS``, ...).
        settings: the generation settings (token budget, sampling); default ``GenerationSettings()``.
        cache: any object with ``get_many(keys)`` and ``put_many({key: raw})``, or None for no cache.
        template_dir: a folder of templates overriding the bundled ones (default ``$MMCASCADE_TEMPLATES``).
        batch_size: prompts per ``reasoner.complete`` call.
        on_batch: called after every batch with (completions generated so far, completions to generate).

    Raises:
        ReasoningError: a ``complete`` call failed (or returned the wrong number of completions);
            the batches finished before it are in the cache, and the message says how many.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    settings = settings if settings is not None else GenerationSettings()
    if not isinstance(settings, GenerationSettings):
        raise ValueError(f"settings must be a GenerationSettings; got {type(settings).__name__}")
    model_id = getattr(reasoner, "model_id", None)
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(
            f"{type(reasoner).__name__} has no model_id: set it to a string that identifies the model "
            "(cache keys depend on it)"
        )
    if cache is not None and not (
        callable(getattr(cache, "get_many", None)) and callable(getattr(cache, "put_many", None))
    ):
        raise ValueError(f"cache must have get_many(keys) and put_many(entries) methods; got {type(cache).__name__}")

    template = load_template(task, template_dir=template_dir)
    prompts = []
    for index, item in enumerate(as_items(items)):
        try:
            prompts.append(render_prompt(item, template))
        except ValueError as error:
            raise ValueError(f"item {index}: {error}") from error
    keys = [trace_key(model_id, prompt, settings) for prompt in prompts]
    prompt_by_key = dict(zip(keys, prompts, strict=True))  # identical prompts are generated once
    unique_keys = list(prompt_by_key)

    raw_by_key: dict[str, Any] = dict(cache.get_many(unique_keys)) if cache is not None and unique_keys else {}
    misses = [key for key in unique_keys if key not in raw_by_key]
    batches = [misses[start : start + batch_size] for start in range(0, len(misses), batch_size)]
    generated = 0
    for number, batch in enumerate(batches, start=1):
        try:
            completions = list(reasoner.complete([prompt_by_key[key] for key in batch], settings))
            if len(completions) != len(batch):
                raise ValueError(f"returned {len(completions)} completion(s) for {len(batch)} prompt(s)")
        except Exception as error:
            # A backend that finished part of the batch (remote: RemoteReasonerError.completed) keeps that part.
            partial = getattr(error, "completed", None) or {}
            salvaged = {
                batch[index]: text
                for index, text in partial.items()
                if 0 <= index < len(batch) and isinstance(text, str)
            }
            if cache is not None and salvaged:
                store_completions(cache, salvaged, model_id)
                generated += len(salvaged)
            kept = (
                f"the {generated} trace(s) generated before it are kept in the cache"
                if cache is not None
                else f"no cache was given, so the {generated} trace(s) generated before it are lost"
            )
            raise ReasoningError(
                f"reasoner {model_id!r} failed on batch {number}/{len(batches)} ({len(batch)} prompt(s)): "
                f"{type(error).__name__}: {error}; {kept}",
                kept=generated if cache is not None else 0,
            ) from error
        finished = dict(zip(batch, completions, strict=True))
        if cache is not None:
            # only strings are worth keeping; anything else is parsed (as a problem) but not cached
            store_completions(cache, {key: raw for key, raw in finished.items() if isinstance(raw, str)}, model_id)
        raw_by_key.update(finished)
        generated += len(batch)
        if on_batch is not None:
            on_batch(generated, len(misses))

    traces = {key: parse_trace(raw_by_key[key]) for key in unique_keys}
    return [traces[key] for key in keys]


def store_completions(cache: TraceStore, entries: dict[str, str], model_id: str) -> None:
    """``cache.put_many``, passing ``model=`` (for per-model stats and clearing) where the cache takes it."""
    try:
        takes_model = "model" in inspect.signature(cache.put_many).parameters
    except (TypeError, ValueError):  # builtins and C extensions may have no signature
        takes_model = False
    if takes_model:
        cache.put_many(entries, model=model_id)
    else:
        cache.put_many(entries)
