"""Library progress bars: shown at a terminal, quiet in logs and pipes, the user's setting restored."""

from __future__ import annotations

import io

from transformers.utils import logging as transformers_logging

from mmcascade.utils.progress import library_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_are_off_in_a_pipe_and_come_back_after() -> None:
    transformers_logging.enable_progress_bar()
    with library_progress(stream=io.StringIO()):
        assert not transformers_logging.is_progress_bar_enabled()
    assert transformers_logging.is_progress_bar_enabled()


def test_a_terminal_keeps_them_and_a_user_who_turned_them_off_is_respected() -> None:
    transformers_logging.enable_progress_bar()
    with library_progress(stream=Terminal()):
        assert transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        with library_progress(stream=Terminal()):
            assert not transformers_logging.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
    finally:
        transformers_logging.enable_progress_bar()
