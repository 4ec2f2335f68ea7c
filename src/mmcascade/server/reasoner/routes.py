"""The FastAPI app: ``GET /health``, ``GET /v1/models`` and ``POST /v1/chat/completions``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mmcascade.reasoner.base import Reasoner
from mmcascade.rerank.local import TokenLogprob
from mmcascade.server.reasoner.batching import DEFAULT_BATCH_WINDOW_S, DEFAULT_MAX_BATCH, NextToken, PromptBatcher
from mmcascade.server.reasoner.schema import (
    DEFAULT_MAX_BODY_BYTES,
    LOGPROB_FLOOR,
    ApiError,
    ChatRequest,
    parse_chat_request,
)

__all__ = ["create_reasoner_app"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


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
        reasoner: any :class:`Reasoner`. If it is a :class:`~mmcascade.reasoner.base.TokenCounter`,
            responses report token usage and ``finish_reason="length"`` when the budget was used up;
            otherwise usage is zeros and ``finish_reason`` is ``"stop"``. ``usage.prompt_tokens`` is what
            the model reads (template, text and image tokens) for a
            :class:`~mmcascade.server.reasoner.batching.PromptTokenCounter` such as a local reasoner, and
            the system + user text's tokens for other counters. A reply cut at a ``stop`` string ends
            with ``finish_reason="stop"``. If it is a local reasoner with a generative backbone,
            logprobs requests are served too (see :class:`~mmcascade.rerank.local.NextTokenScorer`);
            otherwise they get 400.
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
        return JSONResponse(error.as_json(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, error: HTTPException) -> JSONResponse:
        # unknown paths, wrong methods: the same error shape as every other answer
        api_error = ApiError(error.status_code, str(error.detail), error_type=_http_error_type(error.status_code))
        return JSONResponse(api_error.as_json(), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected_error(_request: Request, error: Exception) -> JSONResponse:
        # a bug, not bad input (bad input is an ApiError): answered in the OpenAI shape; Starlette then
        # re-raises it, so the server logs the traceback
        api_error = ApiError(500, f"internal server error: {type(error).__name__}", error_type="server_error")
        return JSONResponse(api_error.as_json(), status_code=500)

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
            return await _next_token_response(batcher, chat, model_name)
        return await _completion_response(batcher, chat, model_name)

    return app


async def _next_token_response(batcher: PromptBatcher, chat: ChatRequest, model_name: str) -> JSONResponse:
    """The log-probabilities of the token after the prompt (and reply prefix), as a one-token reply."""
    if batcher.scorer is None:
        raise ApiError(
            400,
            f"logprobs are not available here: the served reasoner ({type(batcher.reasoner).__name__}) has no "
            "generative backbone to score tokens with; serve a local VLM (mmcascade serve reasoner)",
            param="logprobs",
        )
    next_token = await _model_call(batcher.submit_next_token(chat.prompt, chat.reply_prefix or ""))
    logprobs = {"content": [_first_token_json(next_token, chat.top_logprobs)]}
    # the one token allowed was produced: the reply stopped for length, as vLLM reports it
    return _chat_response(model_name, next_token.chosen.token, logprobs, "length", next_token.prompt_tokens, 1)


async def _completion_response(batcher: PromptBatcher, chat: ChatRequest, model_name: str) -> JSONResponse:
    """A generated reply; ``finish_reason`` is ``"length"`` only when token counts show the budget was spent."""
    completion = await _model_call(batcher.submit(chat.prompt, chat.settings, chat.stop))
    length = (
        not completion.stopped
        and batcher.counts_tokens
        and completion.completion_tokens >= chat.settings.max_new_tokens
    )
    return _chat_response(
        model_name,
        completion.text,
        None,
        "length" if length else "stop",
        completion.prompt_tokens,
        completion.completion_tokens,
    )


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


def _token_json(entry: TokenLogprob) -> dict[str, Any]:
    """OpenAI's ``{token, logprob, bytes}``."""
    logprob = max(entry.logprob, LOGPROB_FLOOR)
    return {"token": entry.token, "logprob": logprob, "bytes": list(entry.token.encode("utf-8"))}


def _first_token_json(next_token: NextToken, top_logprobs: int) -> dict[str, Any]:
    """OpenAI's entry of ``logprobs.content`` for the chosen token and its ``top_logprobs`` alternatives."""
    return {
        **_token_json(next_token.chosen),
        "top_logprobs": [_token_json(entry) for entry in next_token.top[:top_logprobs]],
    }


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


def _http_error_type(status: int) -> str:
    return "not_found_error" if status == 404 else "server_error" if status >= 500 else "invalid_request_error"


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or counted while reading)."""
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
