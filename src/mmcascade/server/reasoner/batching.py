"""Concurrent chat requests gathered into batched model calls, run one at a time in a model thread.

Completions go through :meth:`Reasoner.complete`; next-token log-probabilities (logprobs requests)
through a :class:`~mmcascade.rerank.local.NextTokenScorer` over a local reasoner's backbone.

Usage counts, in the model thread after each batch: a reasoner with ``count_prompt_tokens``
(:class:`PromptTokenCounter`, e.g. a local reasoner) reports the prompt tokens its model reads (chat
template, system and user text, image tokens, a logprobs request's reply prefix); a plain
:class:`~mmcascade.reasoner.base.TokenCounter` reports the tokens of the system and user text only
(no template, no images); other reasoners report zeros. Completion tokens are the tokens of the reply
as returned (after ``stop`` cut it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner, TokenCounter
from mmcascade.rerank.local import NextTokenScorer, TokenLogprob
from mmcascade.server.reasoner.schema import MAX_TOP_LOGPROBS, cut_at_stop

__all__ = [
    "DEFAULT_BATCH_WINDOW_S",
    "DEFAULT_MAX_BATCH",
    "Completion",
    "NextToken",
    "PromptBatcher",
    "PromptTokenCounter",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
DEFAULT_BATCH_WINDOW_S = 0.010


@runtime_checkable
class PromptTokenCounter(Protocol):
    """A reasoner that counts the prompt tokens its model reads (``usage.prompt_tokens``)."""

    def count_prompt_tokens(self, prompts: Sequence[Prompt], reply_prefixes: Sequence[str] | None = None) -> list[int]:
        """Tokens of each prompt as the model reads it: template, text and image tokens (and the reply prefix)."""


@dataclass(frozen=True)
class Completion:
    """One completion with its token counts (0 when the reasoner cannot count cheaply)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: the text was cut at a ``stop`` string
    stopped: bool = False


@dataclass(frozen=True)
class NextToken:
    """The :data:`MAX_TOP_LOGPROBS` most likely next tokens, best first (the first is the greedy choice),
    and the prompt's token count (0 when the reasoner cannot count tokens)."""

    top: tuple[TokenLogprob, ...]
    prompt_tokens: int = 0

    @property
    def chosen(self) -> TokenLogprob:
        """The greedy choice: the most likely token."""
        return self.top[0]


@dataclass(frozen=True)
class _NextTokenBatch:
    """The batch key of logprobs requests: they share forward passes whatever their sampling settings."""


_NEXT_TOKEN = _NextTokenBatch()
_BatchKey = GenerationSettings | _NextTokenBatch


@dataclass
class _Pending:
    prompt: Prompt
    future: asyncio.Future[Any]  # a Completion, or a NextToken for a logprobs request
    arrived: float
    reply_prefix: str = ""
    stop: tuple[str, ...] = ()


class PromptBatcher:
    """Gathers concurrent prompts into batched :meth:`Reasoner.complete` calls.

    Prompts wait in groups keyed by their :class:`GenerationSettings` (a batch shares one setting);
    logprobs requests (:meth:`submit_next_token`) form one more group, scored by a :class:`NextTokenScorer`.
    One worker task takes the oldest group once ``window_s`` has passed since its first prompt
    arrived, or at once when it holds ``max_batch`` prompts, and runs the model call in a single
    dedicated thread, so the event loop keeps accepting requests and model calls never overlap.
    Prompts that arrive while the model is busy pile up and go together in the next batch.
    If a batch of several fails, its prompts are retried one by one, so one bad prompt does not fail
    its neighbours.
    """

    def __init__(
        self, reasoner: Reasoner, *, max_batch: int = DEFAULT_MAX_BATCH, window_s: float = DEFAULT_BATCH_WINDOW_S
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1; got {max_batch!r}")
        if not window_s >= 0:
            raise ValueError(f"the batch window must be >= 0 seconds; got {window_s!r}")
        self.reasoner = reasoner
        self.max_batch = max_batch
        self.window_s = window_s
        self.n_batches = 0
        self.n_prompts = 0
        self._groups: dict[_BatchKey, list[_Pending]] = {}  # insertion order = oldest group first
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._count_tokens: Callable[[str], int] | None = (
            reasoner.count_tokens if isinstance(reasoner, TokenCounter) else None
        )
        #: scores logprobs requests; None when the reasoner has no generative backbone to score with
        self.scorer: NextTokenScorer | None = NextTokenScorer.for_reasoner(reasoner)

    @property
    def counts_tokens(self) -> bool:
        """Whether completions carry real token counts (the reasoner is a :class:`TokenCounter`)."""
        return self._count_tokens is not None

    def start(self) -> None:
        """Start the worker on the running event loop (done on first use if not called)."""
        if self._worker is not None and not self._worker.done():
            return
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reasoner")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="reasoner-batcher")

    async def stop(self) -> None:
        """Stop the worker; prompts still waiting fail. A model call in progress is left to finish."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for group in self._groups.values():
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the server is shutting down"))
        self._groups.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def submit(self, prompt: Prompt, settings: GenerationSettings, stop: tuple[str, ...] = ()) -> Completion:
        """Queue one prompt and wait for its completion, cut before the first ``stop`` string it holds.

        The model still generates up to ``settings.max_new_tokens``; the cut comes after (a batch shares one
        ``generate`` call, so requests with different stop strings still batch together).
        """
        return await self._enqueue(settings, prompt, "", stop)

    async def submit_next_token(self, prompt: Prompt, reply_prefix: str = "") -> NextToken:
        """Queue one prompt + partial reply and wait for the log-probabilities of the token after it."""
        if self.scorer is None:
            raise ValueError(f"{type(self.reasoner).__name__} has no generative backbone to score tokens with")
        return await self._enqueue(_NEXT_TOKEN, prompt, reply_prefix)

    async def _enqueue(self, key: _BatchKey, prompt: Prompt, reply_prefix: str, stop: tuple[str, ...] = ()) -> Any:
        self.start()
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._groups.setdefault(key, []).append(_Pending(prompt, future, loop.time(), reply_prefix, stop))
        self._wakeup.set()
        return await future  # a cancelled request cancels the future; the worker then skips it

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._groups:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key = next(iter(self._groups))
            group = self._groups[key]
            deadline = group[0].arrived + self.window_s
            while len(group) < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            taken, rest = group[: self.max_batch], group[self.max_batch :]
            if rest:
                self._groups[key] = rest  # stays first: its window has passed, so it goes next
            else:
                del self._groups[key]
            live = [pending for pending in taken if not pending.future.done()]
            if live:
                try:
                    await self._execute(key, live)
                except Exception as error:  # a bug here must not hang the waiting requests
                    logger.exception("batch failed unexpectedly")
                    for pending in live:
                        if not pending.future.done():
                            pending.future.set_exception(error)

    async def _execute(self, key: _BatchKey, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        self.n_batches += 1
        self.n_prompts += len(batch)
        try:
            completions = await loop.run_in_executor(self._executor, self._run_batch, key, batch)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].future, error=error)
                return
            logger.warning("a batch of %d failed (%s); retrying its prompts one by one", len(batch), error)
            for pending in batch:
                if pending.future.done():
                    continue
                try:
                    (completion,) = await loop.run_in_executor(self._executor, self._run_batch, key, [pending])
                except Exception as single_error:
                    _settle(pending.future, error=single_error)
                else:
                    _settle(pending.future, result=completion)
            return
        for pending, completion in zip(batch, completions, strict=True):
            _settle(pending.future, result=completion)

    def _run_batch(self, key: _BatchKey, batch: list[_Pending]) -> list[Any]:
        """Runs in the model thread: completions, or next-token log-probabilities for logprobs requests."""
        prompts = [pending.prompt for pending in batch]
        if isinstance(key, _NextTokenBatch):
            return self._next_tokens(prompts, [pending.reply_prefix for pending in batch])
        return self._complete(prompts, key, [pending.stop for pending in batch])

    def _next_tokens(self, prompts: list[Prompt], reply_prefixes: list[str]) -> list[NextToken]:
        assert self.scorer is not None  # submit_next_token checked
        tops = self.scorer.score(prompts, reply_prefixes, top_k=MAX_TOP_LOGPROBS)
        if len(tops) != len(prompts):
            raise RuntimeError(f"the scorer returned {len(tops)} results for {len(prompts)} prompts")
        prompt_tokens = self._prompt_tokens(prompts, reply_prefixes)
        return [NextToken(top, count) for top, count in zip(tops, prompt_tokens, strict=True)]

    def _complete(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, stops: Sequence[tuple[str, ...]]
    ) -> list[Completion]:
        """Runs in the model thread."""
        texts = self.reasoner.complete(prompts, settings)
        if len(texts) != len(prompts):
            raise RuntimeError(f"the reasoner returned {len(texts)} completions for {len(prompts)} prompts")
        cuts = [cut_at_stop(text, stop) for text, stop in zip(texts, stops, strict=True)]
        prompt_tokens = self._prompt_tokens(prompts, None)
        completion_tokens = self._completion_tokens([text for text, _ in cuts])
        return [
            Completion(text, prompt_count, completion_count, stopped)
            for (text, stopped), prompt_count, completion_count in zip(
                cuts, prompt_tokens, completion_tokens, strict=True
            )
        ]

    def _prompt_tokens(self, prompts: Sequence[Prompt], reply_prefixes: Sequence[str] | None) -> list[int]:
        """Runs in the model thread; see the module docstring for what is counted (zeros when it cannot be)."""
        try:
            if isinstance(self.reasoner, PromptTokenCounter):
                counts = self.reasoner.count_prompt_tokens(prompts, reply_prefixes)
                if len(counts) != len(prompts):
                    raise RuntimeError(f"got {len(counts)} prompt token counts for {len(prompts)} prompts")
                return [int(count) for count in counts]
            if self._count_tokens is not None:
                prefixes = reply_prefixes or [""] * len(prompts)
                return [
                    self._count_tokens(f"{prompt.system}\n{prompt.user}{prefix}")
                    for prompt, prefix in zip(prompts, prefixes, strict=True)
                ]
        except Exception:  # usage is a courtesy: never fail a request over it
            logger.warning("counting prompt tokens failed; reporting zero usage", exc_info=True)
        return [0] * len(prompts)

    def _completion_tokens(self, texts: Sequence[str]) -> list[int]:
        """Runs in the model thread: zeros when the reasoner cannot count tokens."""
        if self._count_tokens is not None:
            try:
                return [self._count_tokens(text) for text in texts]
            except Exception:  # usage is a courtesy: never fail a request over it
                logger.warning("count_tokens failed; reporting zero usage", exc_info=True)
        return [0] * len(texts)


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
