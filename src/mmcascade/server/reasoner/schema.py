"""The ``/v1/chat/completions`` request: body limits, the parsed :class:`ChatRequest`, and its validation.

Every bad input becomes an :class:`ApiError` (400) that names the field and what to send instead.
Images arrive only inline as base64 ``data:`` URLs: the server never makes outbound requests.
Before the JSON parser sees a body, a linear scan of its text checks the nesting depth
(:data:`MAX_JSON_DEPTH`) and the number of values (:data:`MAX_JSON_VALUES`), so a hostile body
can neither make the parser recurse deeply nor build millions of objects.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mmcascade.data.items import IMAGE_PLACEHOLDER, load_image
from mmcascade.reasoner.base import MAX_TOKEN_BUDGET, GenerationSettings, Prompt
from mmcascade.rerank.remote import MAX_TOP_LOGPROBS

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "LOGPROB_FLOOR",
    "MAX_JSON_DEPTH",
    "MAX_JSON_VALUES",
    "MAX_STOP_SEQUENCES",
    "MAX_TOP_LOGPROBS",
    "ApiError",
    "ChatRequest",
    "cut_at_stop",
    "parse_chat_request",
    "parse_json_body",
]

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
#: deepest nesting of arrays and objects in a request body (a chat request needs 5: body, messages,
#: message, content parts, image_url)
MAX_JSON_DEPTH = 32
#: most array items and object members in a request body, all arrays and objects together (counted as
#: commas plus opening brackets, an upper bound); a chat request with a few images needs a few dozen
MAX_JSON_VALUES = 4096
#: most ``stop`` strings in one request (as OpenAI)
MAX_STOP_SEQUENCES = 4
#: the seeds ``torch.manual_seed`` accepts
_SEED_RANGE = (-(2**63), 2**64 - 1)
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

    def as_json(self) -> dict[str, Any]:
        """OpenAI's error body, answered with HTTP status :attr:`status`."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": None}}


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
    #: the reply is cut before the first of these strings it contains (``finish_reason`` is then ``"stop"``)
    stop: tuple[str, ...] = ()


def parse_chat_request(body: bytes) -> ChatRequest:
    """Parse and validate a chat-completion request body; raises :class:`ApiError` (400) on bad input."""
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object; got {type(data).__name__}")
    if data.get("stream"):
        raise ApiError(400, "streaming is not supported: send stream=false (or leave it out)", param="stream")
    if data.get("n") not in (None, 1):
        raise ApiError(400, f"only n=1 is supported; got n={_shown(data.get('n'))}", param="n")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string; got {type(model).__name__}", param="model")
    logprobs, top_logprobs = _parse_logprobs(data)
    continue_final = _parse_continue_final(data)
    prompt, reply_prefix = _parse_messages(data.get("messages"), continue_final=continue_final)
    settings = _parse_settings(data)
    stop = _parse_stop(data.get("stop"))
    _check_next_token_request(data, settings, logprobs=logprobs, continue_final=continue_final, stop=stop)
    return ChatRequest(
        prompt=prompt,
        settings=settings,
        model=model,
        reply_prefix=reply_prefix,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        stop=stop,
    )


def parse_json_body(body: bytes) -> Any:
    """A UTF-8 JSON body, checked against :data:`MAX_JSON_DEPTH` and :data:`MAX_JSON_VALUES` before it is parsed.

    Raises :class:`ApiError` (400) for anything else: bad UTF-8, bad JSON, ``NaN``/``Infinity``, integers
    too long to convert, nesting too deep, too many values.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"request body is not UTF-8 text: {error}") from error
    _check_json_size(text)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ApiError:
        raise
    except RecursionError as error:  # the scan keeps nesting shallow; never let a deep one become a 500
        raise ApiError(400, f"request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from error
    except ValueError as error:  # JSONDecodeError, and integers over Python's digit limit
        raise ApiError(400, f"request body is not valid JSON: {error}") from error


_JSON_TOKEN = re.compile(r'[\[\]{},"]')


def _check_json_size(text: str) -> None:
    """Refuse nesting past :data:`MAX_JSON_DEPTH` and values past :data:`MAX_JSON_VALUES`, reading each
    character once (outside strings, only brackets and commas count). Where the text stops being JSON,
    the scan stops and leaves the error to the parser, which then never reads past that point."""
    depth = values = strings = 0
    position = 0
    while (token := _JSON_TOKEN.search(text, position)) is not None:
        char, position = token.group(), token.end()
        if char == '"':
            try:  # the parser's own string scanner (C): it skips escapes at memchr speed, regexes cannot
                position = json.decoder.scanstring(text, position)[1]
            except json.JSONDecodeError:
                return  # an unterminated string or a bad escape
            strings += 1
            # every string is a key or an item, each counted by a comma or an opening bracket (or the top level)
            if strings > 2 * values + 1:
                return  # strings without separators
            continue
        if char in "]}":
            depth -= 1
            if depth < 0:
                return  # a closing bracket that closes nothing
            continue
        values += 1
        if values > MAX_JSON_VALUES:
            raise ApiError(
                400,
                f"request body holds more than {MAX_JSON_VALUES} JSON values; a chat request needs far fewer",
            )
        if char != ",":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ApiError(400, f"request body is nested more than {MAX_JSON_DEPTH} levels deep")


def _refuse_constant(name: str) -> Any:
    raise ApiError(400, f"request body is not valid JSON: {name} is not a JSON number")


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened: error messages echo what was sent without echoing megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


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
    data: dict[str, Any], settings: GenerationSettings, *, logprobs: bool, continue_final: bool, stop: tuple[str, ...]
) -> None:
    """Logprobs are served for one token only, and only they may continue an assistant message."""
    if logprobs and stop:
        raise ApiError(
            400,
            "stop is not supported with logprobs=true: the reply is the one next token; leave stop out",
            param="stop",
        )
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
        raise ApiError(400, f"{name} must be true or false; got {_shown(value)}", param=name)
    return value


def _parse_logprobs(data: dict[str, Any]) -> tuple[bool, int]:
    """``logprobs`` (bool) and ``top_logprobs`` (0..MAX_TOP_LOGPROBS, only with logprobs=true)."""
    logprobs = _flag(data, "logprobs", False)
    top = data.get("top_logprobs")
    if top is None:
        return logprobs, 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ApiError(
            400, f"top_logprobs must be an integer in 0..{MAX_TOP_LOGPROBS}; got {_shown(top)}", param="top_logprobs"
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
                f"(the start of the reply); {where} has role {_shown(role)}",
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
                f"{where}: role {_shown(role)} is not supported; send system messages (optional, joined in order) "
                "and one user message (then, to read the next token's logprobs after a partial reply, a final "
                "assistant message with continue_final_message=true)",
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
            _check_encodable(text, f"{part_where}.text")
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
                f"{part_where}: content part type {_shown(part_type)} is not supported; use text and image_url",
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
            f"{where}: image_url must be a base64 data URL (data:image/png;base64,...); got {_shown(url, 50)}",
            param="messages",
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(400, f"{where}: the image data URL is not valid base64 ({error})", param="messages") from error
    try:
        return load_image(raw)
    except Exception as error:  # ValueError from load_image; any other decoder failure is the input's fault too
        raise ApiError(400, f"{where}.image_url: {_image_problem(error)}", param="messages") from error


#: what a stream of bytes is called in PIL's messages (``<_io.BytesIO object at 0x...>``), which means nothing here
_STREAM_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")
_BYTES_NAME = re.compile(r"^image <\d+ bytes> ")


def _image_problem(error: Exception) -> str:
    """What is wrong with a decoded data URL's image, in words about the request (no file names, no stream reprs)."""
    if not isinstance(error, ValueError):
        return f"the image is not a readable image ({type(error).__name__}: {_STREAM_REPR.sub('', str(error))})"
    problem = _BYTES_NAME.sub("the image ", _STREAM_REPR.sub("", str(error)))
    problem = problem.removesuffix("; check the file or remove it")
    if "not a readable image" in problem:
        problem += "; send a PNG, JPEG, WebP or GIF image"
    return problem


def _check_encodable(text: str, where: str) -> None:
    """Refuse lone surrogates (``\\ud800`` escapes are valid JSON but no valid text): no tokenizer or reply takes them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ApiError(
            400,
            f"{where} holds an unpaired surrogate {_shown(error.object[error.start : error.end])}; send valid text",
            param="messages",
        ) from error


def _parse_stop(stop: Any) -> tuple[str, ...]:
    """``stop``: null, a string, or a list of up to :data:`MAX_STOP_SEQUENCES` non-empty strings."""
    if stop is None:
        return ()
    sequences = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(sequences, list)
        or len(sequences) > MAX_STOP_SEQUENCES
        or not all(isinstance(sequence, str) and sequence for sequence in sequences)
    ):
        raise ApiError(
            400,
            f"stop must be a non-empty string or a list of up to {MAX_STOP_SEQUENCES} non-empty strings; "
            f"got {_shown(stop)}",
            param="stop",
        )
    for sequence in sequences:
        try:
            sequence.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ApiError(400, "stop holds an unpaired surrogate; send valid text", param="stop") from error
    return tuple(sequences)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first occurrence of any ``stop`` string (which is left out), and whether one occurred."""
    cut = min((index for sequence in stop if (index := text.find(sequence)) >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


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
            f"{param} must be an integer in 1..{MAX_TOKEN_BUDGET} (the reasoning token budget); "
            f"got {_shown(max_tokens)}",
            param=param,
        )
    temperature = _number(data, "temperature", defaults.temperature)
    top_p = _number(data, "top_p", defaults.top_p)
    seed = data.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]
    ):
        raise ApiError(400, f"seed must be null or an integer in [-2**63, 2**64 - 1]; got {_shown(seed)}", param="seed")
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
        raise ApiError(400, f"{name} must be a number; got {_shown(value)}", param=name)
    try:
        number = float(value)
    except OverflowError as error:  # an integer past the float range
        raise ApiError(400, f"{name} must be a finite number; got {_shown(value)}", param=name) from error
    if not math.isfinite(number):  # 1e999 parses as infinity
        raise ApiError(400, f"{name} must be a finite number; got {value!r}", param=name)
    return number
