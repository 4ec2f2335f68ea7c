"""Serve a :class:`~mmcascade.reasoner.base.Reasoner` as an OpenAI-compatible chat-completion endpoint (a subset).

``GET /v1/models``, ``POST /v1/chat/completions`` (one user message of text and ``data:`` URL image
parts; any system or developer messages are joined in order, a blank line apart, into the system prompt;
``stop`` strings cut the reply; no streaming) and ``GET /health``. Concurrent requests with the same
generation settings are batched into one :meth:`Reasoner.complete` call (see :class:`PromptBatcher`),
which is where batched local generation pays off. Remote image URLs are refused: the server never
makes outbound requests. Every refusal is a 4xx in OpenAI's error shape; bodies are limited in size,
nesting depth and number of values (``schema.MAX_JSON_DEPTH``, ``schema.MAX_JSON_VALUES``).

Next-token log-probabilities (what a reranker judge reads, :class:`~mmcascade.rerank.remote.OpenAIJudge`):
``logprobs: true`` with ``max_tokens: 1`` answers the first reply token with OpenAI's ``logprobs``
object (``top_logprobs`` up to 20 alternatives, best first), computed from the full vocabulary by the
reasoner's generative backbone (:class:`~mmcascade.rerank.local.NextTokenScorer`). As in vLLM and
SGLang, ``continue_final_message: true`` with ``add_generation_prompt: false`` and a final assistant
message reads the token after that partial reply instead of the first one. Plain generation cannot
continue a reply.

Modules, in request order: ``schema`` (body limits, parsing and validation), ``batching`` (the model
calls), ``routes`` (the FastAPI app), ``runner`` (uvicorn in a background thread). Importing this
package needs the ``server`` extra (FastAPI and uvicorn).
"""

from mmcascade.server.reasoner.batching import (
    DEFAULT_BATCH_WINDOW_S,
    DEFAULT_MAX_BATCH,
    Completion,
    NextToken,
    PromptBatcher,
)
from mmcascade.server.reasoner.routes import create_reasoner_app
from mmcascade.server.reasoner.runner import serve_in_thread
from mmcascade.server.reasoner.schema import (
    DEFAULT_MAX_BODY_BYTES,
    LOGPROB_FLOOR,
    MAX_TOP_LOGPROBS,
    ApiError,
    ChatRequest,
    parse_chat_request,
)

__all__ = [
    "DEFAULT_BATCH_WINDOW_S",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "LOGPROB_FLOOR",
    "MAX_TOP_LOGPROBS",
    "ApiError",
    "ChatRequest",
    "Completion",
    "NextToken",
    "PromptBatcher",
    "create_reasoner_app",
    "parse_chat_request",
    "serve_in_thread",
]
