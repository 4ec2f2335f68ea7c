"""Serve a :class:`Reasoner` as an OpenAI-compatible chat-completion endpoint (a subset).

``GET /v1/models``, ``POST /v1/chat/completions`` (one system message, one user message of text and
``data:`` URL image parts; no streaming) and ``GET /health``. Concurrent requests with the same
generation settings are batched into one :meth:`Reasoner.complete` call (see :class:`PromptBatcher`),
which is where batched local generation pays off. Remote image URLs are refused: the server never
makes outbound requests.

Next-token log-probabilities (what a reranker judge reads, :class:`~mmcascade.rerank.remote.OpenAIJudge`):
``logprobs: true`` with ``max_tokens: 1`` answers the first reply token with OpenAI's ``logprobs``
object (``top_logprobs`` up to 20 alternatives, best first), computed from the full vocabulary by the
reasoner's generative backbone. As in vLLM and SGLang, ``continue_final_message: true`` with
``add_generation_prompt: false`` and a final assistant message reads the token after that partial
reply instead of the first one. Plain generation cannot continue a reply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from mmcascade.data.items import IMAGE_PLACEHOLDER, load_image
from mmcascade.reasoner.base import MAX_TOKEN_BUDGET, GenerationSettings, Prompt, Reasoner

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_BATCH = 32
DEFAULT_BATCH_WINDOW_S = 0.010
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
#: the most alternatives a logprobs request may ask for (OpenAI's limit, vLLM's default)
MAX_TOP_LOGPROBS = 20
#: stands in for a log-probability of -inf, which JSON cannot hold (as vLLM does)
LOGPROB_FLOOR = -9999.0


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, error_type: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_type = error_type

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": None}}
        return JSONResponse(body, status_code=self.status)


@dataclass(frozen=True)
class ChatRequest:
    """A parsed ``/v1/chat/completions`` request."""

    prompt: Prompt
    settings: GenerationSettings
    model: str | None
    #: the start of the assistant reply to continue (a final assistant message with continue_final_message)
    reply_prefix: str | None = None
    #: answer with the log-probabilities of the next token (``max_tokens`` is then 1)
    logprobs: bool = False
    #: how many of the most likely next tokens to list with ``logprobs`` (0..MAX_TOP_LOGPROBS)
    top_logprobs: int = 0


@dataclass(frozen=True)
class Completion:
    """One completion with its token counts (0 when the reasoner cannot count cheaply)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    """One vocabulary token, decoded (``" yes"`` keeps its space), and its log-probability."""

    token: str
    logprob: float

    def as_json(self) -> dict[str, Any]:
        """OpenAI's ``{token, logprob, bytes}``."""
        return {"token": self.token, "logprob": self.logprob, "bytes": list(self.token.encode("utf-8"))}


@dataclass(frozen=True)
class NextToken:
    """The :data:`MAX_TOP_LOGPROBS` most likely next tokens, best first (the first is the greedy choice)."""

    top: tuple[TokenLogprob, ...]
    prompt_tokens: int = 0

    @property
    def chosen(self) -> TokenLogprob:
        return self.top[0]


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def parse_chat_request(body: bytes) -> ChatRequest:
    """Parse and validate a chat-completion request body; raises :class:`ApiError` (400) on bad input."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object; got {type(data).__name__}")
    if data.get("stream"):
        raise ApiError(400, "streaming is not supported: send stream=false (or leave it out)", param="stream")
    if data.get("n") not in (None, 1):
        raise ApiError(400, f"only n=1 is supported; got n={data.get('n')!r}", param="n")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string; got {type(model).__name__}", param="model")
    logprobs, top_logprobs = _parse_logprobs(data)
    continue_final = _parse_continue_final(data)
    prompt, reply_prefix = _parse_messages(data.get("messages"), continue_final=continue_final)
    settings = _parse_settings(data)
    _check_next_token_request(data, settings, logprobs=logprobs, continue_final=continue_final)
    return ChatRequest(
        prompt=prompt,
        settings=settings,
        model=model,
        reply_prefix=reply_prefix,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _parse_continue_final(data: dict[str, Any]) -> bool:
    """``continue_final_message``, which needs ``add_generation_prompt=false`` (and the other way round)."""
    continue_final = _flag(data, "continue_final_message", False)
    add_generation_prompt = _flag(data, "add_generation_prompt", True)
    if continue_final and add_generation_prompt:
        raise ApiError(
            400,
            "continue_final_message=true continues the final assistant message, so it needs "
            "add_generation_prompt=false (a new reply cannot start inside one)",
            param="add_generation_prompt",
        )
    if not continue_final and not add_generation_prompt:
        raise ApiError(
            400,
            "add_generation_prompt=false is only supported with continue_final_message=true "
            "(to continue a final assistant message)",
            param="add_generation_prompt",
        )
    return continue_final


def _check_next_token_request(
    data: dict[str, Any], settings: GenerationSettings, *, logprobs: bool, continue_final: bool
) -> None:
    """Logprobs are served for one token only, and only they may continue an assistant message."""
    if continue_final and not logprobs:
        raise ApiError(
            400,
            "continue_final_message=true is not supported for generation: this server continues an assistant "
            "message only to read the next token's log-probabilities (logprobs=true, max_tokens=1)",
            param="continue_final_message",
        )
    if logprobs and settings.max_new_tokens != 1:
        param = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
        sent = (
            f"{param}={data[param]!r}"
            if data.get(param) is not None
            else f"no max_tokens (default {settings.max_new_tokens})"
        )
        raise ApiError(
            400,
            f"logprobs are served for max_tokens=1 only (the log-probabilities of the next token); "
            f"send max_tokens=1, got {sent}",
            param=param,
        )


def _flag(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false; got {value!r}", param=name)
    return value


def _parse_logprobs(data: dict[str, Any]) -> tuple[bool, int]:
    """``logprobs`` (bool) and ``top_logprobs`` (0..MAX_TOP_LOGPROBS, only with logprobs=true)."""
    logprobs = _flag(data, "logprobs", False)
    top = data.get("top_logprobs")
    if top is None:
        return logprobs, 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ApiError(
            400, f"top_logprobs must be an integer in 0..{MAX_TOP_LOGPROBS}; got {top!r}", param="top_logprobs"
        )
    if top and not logprobs:
        raise ApiError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    return logprobs, top


def _parse_messages(messages: Any, *, continue_final: bool = False) -> tuple[Prompt, str | None]:
    """The prompt and, with ``continue_final``, the final assistant message: the reply prefix to continue."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    reply_prefix: str | None = None
    if continue_final:
        last = messages[-1]
        role = last.get("role") if isinstance(last, dict) else None
        where = f"messages[{len(messages) - 1}]"
        if role != "assistant":
            raise ApiError(
                400,
                f"continue_final_message=true continues the final message, which must be an assistant message "
                f"(the start of the reply); {where} has role {role!r}",
                param="messages",
            )
        reply_prefix, images = _parse_content(last.get("content"), where)
        if images:
            raise ApiError(400, f"{where}: an assistant message cannot hold images", param="messages")
        messages = messages[:-1]
    system_texts: list[str] = []
    user: tuple[str, tuple[Image.Image, ...]] | None = None
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with role and content", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            text, images = _parse_content(message.get("content"), where)
            if images:
                raise ApiError(400, f"{where}: a system message cannot hold images", param="messages")
            system_texts.append(text)
        elif role == "user":
            if user is not None:
                raise ApiError(
                    400,
                    f"{where}: only one user message is supported (this endpoint is single-turn); "
                    "put all the text and images in one user message",
                    param="messages",
                )
            user = _parse_content(message.get("content"), where)
        else:
            raise ApiError(
                400,
                f"{where}: role {role!r} is not supported; send a system message (optional) and one user message "
                "(then, to read the next token's logprobs after a partial reply, a final assistant message with "
                "continue_final_message=true)",
                param="messages",
            )
    if user is None:
        raise ApiError(400, "messages has no user message", param="messages")
    return Prompt(system="\n\n".join(system_texts), user=user[0], images=user[1]), reply_prefix


def _parse_content(content: Any, where: str) -> tuple[str, tuple[Image.Image, ...]]:
    """A message's text, with ``<image>`` where each image part was, and its decoded images."""
    if isinstance(content, str):
        parts: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = content
    else:
        raise ApiError(400, f"{where}.content must be a string or a list of content parts", param="messages")
    texts: list[str] = []
    images: list[Image.Image] = []
    for index, part in enumerate(parts):
        part_where = f"{where}.content[{index}]" if isinstance(content, list) else f"{where}.content"
        part_type = part.get("type") if isinstance(part, dict) else None
        if part_type == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ApiError(400, f"{part_where}.text must be a string", param="messages")
            if IMAGE_PLACEHOLDER in text:
                raise ApiError(
                    400,
                    f"{part_where}: text may not contain the literal {IMAGE_PLACEHOLDER}; send images as image_url parts",
                    param="messages",
                )
            texts.append(text)
        elif part_type == "image_url":
            images.append(_decode_image_part(part.get("image_url"), part_where))
            texts.append(IMAGE_PLACEHOLDER)
        else:
            raise ApiError(
                400,
                f"{part_where}: content part type {part_type!r} is not supported; use text and image_url",
                param="messages",
            )
    return "".join(texts), tuple(images)


def _decode_image_part(image_url: Any, where: str) -> Image.Image:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise ApiError(400, f"{where}.image_url.url must be a string", param="messages")
    if url.startswith(("http://", "https://")):
        raise ApiError(
            400,
            f"{where}: remote image URLs are not fetched (this server makes no outbound requests); "
            "send the image inline as a data URL: data:image/png;base64,...",
            param="messages",
        )
    header, comma, encoded = url.partition(",")
    if not (url.startswith("data:image/") and comma and header.endswith(";base64")):
        raise ApiError(
            400,
            f"{where}: image_url must be a base64 data URL (data:image/png;base64,...); got {url[:40]!r}",
            param="messages",
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(400, f"{where}: the image data URL is not valid base64 ({error})", param="messages") from error
    try:
        return load_image(raw)
    except (ValueError, Image.DecompressionBombError) as error:
        raise ApiError(400, f"{where}: {error}", param="messages") from error


def _parse_settings(data: dict[str, Any]) -> GenerationSettings:
    defaults = GenerationSettings()
    max_tokens = data.get("max_completion_tokens")
    param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = data.get("max_tokens"), "max_tokens"
    if max_tokens is None:
        max_tokens = defaults.max_new_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKEN_BUDGET:
        raise ApiError(
            400,
            f"{param} must be an integer in 1..{MAX_TOKEN_BUDGET} (the reasoning token budget); got {max_tokens!r}",
            param=param,
        )
    temperature = _number(data, "temperature", defaults.temperature)
    top_p = _number(data, "top_p", defaults.top_p)
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, f"seed must be an integer or null; got {seed!r}", param="seed")
    try:
        return GenerationSettings(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    except ValueError as error:
        param = "temperature" if "temperature" in str(error) else "top_p" if "top_p" in str(error) else None
        raise ApiError(400, str(error), param=param) from error


def _number(data: dict[str, Any], name: str, default: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name} must be a number; got {value!r}", param=name)
    return float(value)


# ----------------------------------------------------------------------------------------------
# Next-token log-probabilities
# ----------------------------------------------------------------------------------------------


class NextTokenScorer:
    """Next-token log-probabilities of chat prompts followed by partial assistant replies, over the full
    vocabulary of a generative backbone (what a logprobs request with ``max_tokens=1`` reads).

    ``batch_size`` prompts go through one forward pass (length-sorted, as the local judge does).
    """

    def __init__(self, backbone: Any, *, batch_size: int = 16) -> None:
        backbone.require_generative("report next-token log-probabilities")
        self.backbone = backbone
        self.batch_size = batch_size
        self.tokenizer = backbone.processor.tokenizer
        self.vocabulary = range(len(self.tokenizer))  # the tokens it can decode; the lm head may pad past them

    @classmethod
    def for_reasoner(cls, reasoner: Reasoner) -> NextTokenScorer | None:
        """A scorer over the reasoner's backbone (a local reasoner's), or None if it has no generative one."""
        backbone = getattr(reasoner, "backbone", None)
        if backbone is None or not getattr(backbone, "generative", False):
            return None
        batch_size = getattr(reasoner, "batch_size", 16)
        return cls(backbone, batch_size=batch_size if isinstance(batch_size, int) and batch_size > 0 else 16)

    def score(self, prompts: Sequence[Prompt], reply_prefixes: Sequence[str]) -> list[NextToken]:
        """The :data:`MAX_TOP_LOGPROBS` most likely tokens after each prompt + reply prefix, best first."""
        import torch

        from mmcascade.rerank.local import prompt_continuation_logits

        logits = prompt_continuation_logits(
            self.backbone, prompts, reply_prefixes, self.vocabulary, batch_size=self.batch_size
        )  # (n, V)
        logprobs = torch.log_softmax(logits, dim=-1)  # (n, V)
        values, token_ids = logprobs.topk(min(MAX_TOP_LOGPROBS, logprobs.shape[-1]), dim=-1)  # (n, k)
        return [
            NextToken(
                tuple(
                    TokenLogprob(self.tokenizer.decode([token_id]), max(value, LOGPROB_FLOOR))
                    for value, token_id in zip(row_values, row_ids, strict=True)
                )
            )
            for row_values, row_ids in zip(values.tolist(), token_ids.tolist(), strict=True)
        ]


# ----------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------


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
        count_tokens = getattr(reasoner, "count_tokens", None)
        self._count_tokens: Callable[[str], int] | None = count_tokens if callable(count_tokens) else None
        #: scores logprobs requests; None when the reasoner has no generative backbone to score with
        self.scorer: NextTokenScorer | None = NextTokenScorer.for_reasoner(reasoner)

    @property
    def counts_tokens(self) -> bool:
        """Whether completions carry real token counts (the reasoner has ``count_tokens``)."""
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

    async def submit(self, prompt: Prompt, settings: GenerationSettings) -> Completion:
        """Queue one prompt and wait for its completion."""
        return await self._enqueue(settings, prompt, "")

    async def submit_next_token(self, prompt: Prompt, reply_prefix: str = "") -> NextToken:
        """Queue one prompt + partial reply and wait for the log-probabilities of the token after it."""
        if self.scorer is None:
            raise ValueError(f"{type(self.reasoner).__name__} has no generative backbone to score tokens with")
        return await self._enqueue(_NEXT_TOKEN, prompt, reply_prefix)

    async def _enqueue(self, key: _BatchKey, prompt: Prompt, reply_prefix: str) -> Any:
        self.start()
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._groups.setdefault(key, []).append(_Pending(prompt, future, loop.time(), reply_prefix))
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
        return self._complete(prompts, key)

    def _next_tokens(self, prompts: list[Prompt], reply_prefixes: list[str]) -> list[NextToken]:
        assert self.scorer is not None  # submit_next_token checked
        results = self.scorer.score(prompts, reply_prefixes)
        if len(results) != len(prompts):
            raise RuntimeError(f"the scorer returned {len(results)} results for {len(prompts)} prompts")
        if self._count_tokens is None:
            return results
        try:
            return [
                NextToken(result.top, self._count_tokens(f"{prompt.system}\n{prompt.user}{prefix}"))
                for result, prompt, prefix in zip(results, prompts, reply_prefixes, strict=True)
            ]
        except Exception:  # usage is a courtesy: never fail a request over it
            logger.warning("count_tokens failed; reporting zero usage", exc_info=True)
            return results

    def _complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[Completion]:
        """Runs in the model thread."""
        texts = self.reasoner.complete(prompts, settings)
        if len(texts) != len(prompts):
            raise RuntimeError(f"the reasoner returned {len(texts)} completions for {len(prompts)} prompts")
        if self._count_tokens is None:
            return [Completion(text) for text in texts]
        try:
            return [
                Completion(text, self._count_tokens(f"{prompt.system}\n{prompt.user}"), self._count_tokens(text))
                for prompt, text in zip(prompts, texts, strict=True)
            ]
        except Exception:  # usage is a courtesy: never fail a completion over it
            logger.warning("count_tokens failed; reporting zero usage", exc_info=True)
            return [Completion(text) for text in texts]


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# ----------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------


def create_reasoner_app(
    reasoner: Reasoner,
    model_name: str,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """An OpenAI-compatible app serving ``reasoner`` under ``model_name``.

    Args:
        reasoner: any :class:`Reasoner`. If it has ``count_tokens(text) -> int``, responses report
            token usage (prompt text only, images not counted) and ``finish_reason="length"`` when
            the budget was used up; otherwise usage is zeros and ``finish_reason`` is ``"stop"``.
            If it has a generative ``backbone`` (a local reasoner), logprobs requests are served too
            (see :class:`NextTokenScorer`); otherwise they get 400.
        model_name: the name in ``GET /v1/models``; requests naming another model get 404.
        max_batch: most prompts per :meth:`Reasoner.complete` call.
        batch_window_s: how long the first request of a batch waits for others to join it.
        max_body_bytes: larger request bodies are refused with 413.
    """
    batcher = PromptBatcher(reasoner, max_batch=max_batch, window_s=batch_window_s)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"mmcascade reasoner: {model_name}", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "mmcascade"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        body = await _read_body(request, max_body_bytes)
        # JSON of several MB and image decoding are CPU work: keep them off the event loop.
        chat = await asyncio.to_thread(parse_chat_request, body)
        if chat.model is not None and chat.model != model_name:
            raise ApiError(
                404,
                f"model {chat.model!r} is not served here; this server serves {model_name!r} (see GET /v1/models)",
                param="model",
                error_type="not_found_error",
            )
        if chat.logprobs:
            if batcher.scorer is None:
                raise ApiError(
                    400,
                    f"logprobs are not available here: the served reasoner ({type(reasoner).__name__}) has no "
                    "generative backbone to score tokens with; serve a local VLM (mmcascade serve reasoner)",
                    param="logprobs",
                )
            next_token = await _model_call(batcher.submit_next_token(chat.prompt, chat.reply_prefix or ""))
            logprobs = {
                "content": [
                    {
                        **next_token.chosen.as_json(),
                        "top_logprobs": [entry.as_json() for entry in next_token.top[: chat.top_logprobs]],
                    }
                ]
            }
            # the one token allowed was produced: the reply stopped for length, as vLLM reports it
            return _chat_response(model_name, next_token.chosen.token, logprobs, "length", next_token.prompt_tokens, 1)
        completion = await _model_call(batcher.submit(chat.prompt, chat.settings))
        length = batcher.counts_tokens and completion.completion_tokens >= chat.settings.max_new_tokens
        return _chat_response(
            model_name,
            completion.text,
            None,
            "length" if length else "stop",
            completion.prompt_tokens,
            completion.completion_tokens,
        )

    return app


async def _model_call(call: Awaitable[T]) -> T:
    """Await a batched model call; a prompt the model rejects is a 400, any other failure a 500."""
    try:
        return await call
    except ValueError as error:
        raise ApiError(400, f"the reasoner rejected the prompt: {error}") from error
    except Exception as error:
        logger.exception("the reasoner failed")
        raise ApiError(
            500, f"the reasoner failed: {type(error).__name__}: {error}", error_type="server_error"
        ) from error


def _chat_response(
    model_name: str,
    content: str,
    logprobs: dict[str, Any] | None,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> JSONResponse:
    """An OpenAI ``chat.completion`` object with one choice."""
    return JSONResponse(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": logprobs,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = ApiError(
        413,
        f"request body is larger than this server's limit of {limit / 2**20:g} MiB; send fewer or smaller images",
        error_type="request_too_large",
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"bad Content-Length header {declared!r}")
        if int(declared) > limit:
            raise too_large  # refuse before reading it
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL (``http://host:port``).

    ``port=0`` picks a free port. For tests, notebooks and examples; ``mmcascade serve`` runs in the foreground.
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it
    # every response stalls ~40 ms (Nagle waiting for the client's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start")
            time.sleep(0.005)
        yield f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
