"""Progress bars from the libraries we load through: shown to a person at a terminal, quiet otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from transformers.utils import logging as transformers_logging


@contextlib.contextmanager
def library_progress(*, stream: object = None) -> Iterator[None]:
    """Within the block, transformers' progress bars ("Loading weights", GGUF conversion) show only when
    ``stream`` (default stderr) is a terminal; the previous setting is restored afterwards."""
    stream = sys.stderr if stream is None else stream
    wanted = bool(getattr(stream, "isatty", lambda: False)())
    enabled = transformers_logging.is_progress_bar_enabled()
    if enabled and not wanted:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled and not wanted:
            transformers_logging.enable_progress_bar()
