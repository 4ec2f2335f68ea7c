"""The write lock, and waiting for a store whose engine admits one process at a time."""

from __future__ import annotations

import fcntl
import time

import pytest

from mmcascade.index.base import StoreBusyError
from mmcascade.index.lock import LOCK_NAME, LOCK_TIMEOUT_ENV, lock_timeout, open_when_free, writer_active


def busy_then(result: str, busy_times: int):
    calls = []

    def open_store() -> str:
        calls.append(time.monotonic())
        if len(calls) <= busy_times:
            raise StoreBusyError("raw engine words: Can't init WAL: Kind(WouldBlock)")
        return result

    return open_store, calls


def test_the_timeout_comes_from_the_argument_then_the_environment_then_30_s(monkeypatch):
    monkeypatch.delenv(LOCK_TIMEOUT_ENV, raising=False)
    assert lock_timeout() == 30.0
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "2.5")
    assert (lock_timeout(), lock_timeout(0)) == (2.5, 0.0)
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=r"\$MMCASCADE_LOCK_TIMEOUT must be a number of seconds >= 0; got"):
        lock_timeout()
    for bad in (-1, float("nan"), True):
        with pytest.raises(ValueError, match="wait must be a number of seconds"):
            lock_timeout(bad)


def test_a_busy_store_is_retried_until_it_opens(tmp_path):
    open_store, calls = busy_then("store", busy_times=2)
    assert open_when_free(open_store, tmp_path, "x", wait=5) == "store"
    assert len(calls) == 3


def test_a_store_still_busy_after_the_timeout_says_who_holds_it_in_plain_words(tmp_path):
    open_store, _ = busy_then("store", busy_times=100)
    with pytest.raises(ValueError, match="index 'x' is open in another process") as caught:
        open_when_free(open_store, tmp_path, "x", wait=0)
    assert "WouldBlock" not in str(caught.value) and LOCK_TIMEOUT_ENV in str(caught.value)
    with (tmp_path / LOCK_NAME).open("a+") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)  # another file description: flock conflicts as across processes
        assert writer_active(tmp_path)
        with pytest.raises(ValueError, match="index 'x' is being written by another process; wait for it to finish"):
            open_when_free(open_store, tmp_path, "x", wait=0)
    assert not writer_active(tmp_path)


def test_a_writer_meets_the_write_lock_before_the_store(tmp_path):
    open_store, calls = busy_then("store", busy_times=0)
    with (tmp_path / LOCK_NAME).open("a+") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="index 'x' is being written by another process; wait for it to finish"):
            open_when_free(open_store, tmp_path, "x", write=True, wait=10)
    assert calls == []  # the engine was never asked
    assert open_when_free(open_store, tmp_path, "x", write=True) == "store"
