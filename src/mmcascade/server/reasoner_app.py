"""Moved to :mod:`mmcascade.server.reasoner`; this alias is kept for one release.

Import from ``mmcascade.server.reasoner`` (the app, batcher, request schema and thread runner) and
``mmcascade.rerank.local`` (:class:`NextTokenScorer`, :class:`TokenLogprob`) instead.
"""

from mmcascade.rerank.local import NextTokenScorer, TokenLogprob
from mmcascade.server.reasoner import (
    DEFAULT_BATCH_WINDOW_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    LOGPROB_FLOOR,
    MAX_TOP_LOGPROBS,
    ApiError,
    ChatRequest,
    Completion,
    NextToken,
    PromptBatcher,
    create_reasoner_app,
    parse_chat_request,
    serve_in_thread,
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
    "NextTokenScorer",
    "PromptBatcher",
    "TokenLogprob",
    "create_reasoner_app",
    "parse_chat_request",
    "serve_in_thread",
]
