"""A :class:`Reasoner` backed by an OpenAI-compatible chat-completion server (vLLM, SGLang, ``mmcascade serve``).

Prompts are sent concurrently (bounded by ``concurrency``), each as one ``POST {base_url}/chat/completions``
whose user message interleaves text parts and ``data:`` URL image parts in ``<image>`` placeholder order.
Transient failures (connection errors, timeouts, 429, 5xx, unparseable responses) are retried with
exponential backoff and jitter; other 4xx answers are not. When some prompts still fail,
:class:`RemoteReasonerError` carries the completions that did succeed, so a caller can cache them.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import email.utils
import io
import json
import os
import random
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from mmcascade.data.items import IMAGE_PLACEHOLDER, ImageSource, load_image
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner

#: no single wait between attempts (backoff or a server's Retry-After) is longer than this
MAX_BACKOFF_S = 30.0
#: failures listed in a :class:`RemoteReasonerError` message; all of them are in ``.errors``
_FAILURES_SHOWN = 3
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

T = TypeVar("T")


class RemoteReasonerError(RuntimeError):
    """Some or all prompts could not be completed by the server.

    Attributes:
        url: the chat-completion URL that was called.
        completed: prompt index -> result, for the prompts that succeeded (the completion text; for a
            judge, :class:`~mmcascade.rerank.remote.OpenAIJudge`, its ``(yes, no)`` log-probabilities).
        errors: prompt index -> what went wrong, for the prompts that failed (or were not attempted
            because the server was found to be unreachable or to refuse every request).
    """

    def __init__(self, message: str, *, url: str, completed: dict[int, Any], errors: dict[int, str]) -> None:
        super().__init__(message)
        self.url = url
        self.completed = completed
        self.errors = errors


@dataclass(eq=False)  # exceptions stay hashable
class _AttemptError(Exception):
    """One HTTP attempt failed; ``retryable`` says whether another attempt may help."""

    reason: str
    retryable: bool
    #: the server cannot serve any prompt (unreachable, auth, wrong URL or model): stop sending the rest
    fatal: bool = False
    retry_after_s: float | None = None

    def __str__(self) -> str:
        return self.reason


class OpenAIReasoner(Reasoner):
    """Completes prompts through an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: the served model name sent as ``model``.
        api_key: sent as a Bearer token; default ``$OPENAI_API_KEY`` (none if unset).
        concurrency: requests in flight at once.
        timeout_s: per-request timeout (generation included); connecting times out after at most 10 s.
        max_retries: extra attempts per prompt after a transient failure.
        backoff_s: the first wait between attempts; doubled each retry, jittered, capped at
            :data:`MAX_BACKOFF_S`. A server's ``Retry-After`` is honoured up to the same cap.
        extra_body: extra JSON fields merged into every request (e.g. ``{"top_k": 20}`` for vLLM).

    :meth:`complete` works from synchronous code and from inside a running event loop (it then
    runs its own loop in a worker thread and blocks the caller); async code can await :meth:`acomplete`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1); got {base_url!r}"
            )
        if not model:
            raise ValueError("model (the served model name) must be a non-empty string")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1; got {concurrency!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0; got {timeout_s!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0; got {max_retries!r}")
        if not backoff_s >= 0:
            raise ValueError(f"backoff_s must be >= 0; got {backoff_s!r}")
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ValueError(f"extra_body must be a dict of JSON fields; got {type(extra_body).__name__}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.url = f"{self.base_url}/chat/completions"
        self.model_id = f"{model}@{self.base_url}"
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.extra_body = dict(extra_body or {})
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._random = random.Random()

    def __repr__(self) -> str:  # never shows the API key
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"
        )

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        """One completion per prompt, in order; raises :class:`RemoteReasonerError` if any prompt failed."""
        return self._run_blocking(lambda: self.acomplete(prompts, settings))

    async def acomplete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        """The async form of :meth:`complete`."""
        return await self._request_all(
            prompts, lambda index, prompt: self._payload(prompt, settings), self._parse_completion
        )

    def _run_blocking(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine ``make()`` to the end from synchronous code, even inside a running event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(make())
        # A loop is running in this thread (a notebook, an async app): asyncio.run would refuse, so
        # run our own loop in a worker thread and block until it is done.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="openai-reasoner") as pool:
            return pool.submit(asyncio.run, make()).result()

    async def _request_all(
        self,
        prompts: Sequence[Prompt],
        payload_of: Callable[[int, Prompt], bytes],
        parse: Callable[[httpx.Response], T],
    ) -> list[T]:
        """POST ``payload_of(index, prompt)`` for every prompt (bounded concurrency, retries) and ``parse`` each
        200 answer; raises :class:`RemoteReasonerError`, holding the results that did succeed, if any failed."""
        prompts = list(prompts)
        if not prompts:
            return []
        for index, prompt in enumerate(prompts):
            _check_placeholders(prompt, index)
        semaphore = asyncio.Semaphore(self.concurrency)
        abort: list[str] = []  # set to [reason] once the server is found unable to serve anything
        completed: dict[int, T] = {}
        errors: dict[int, str] = {}

        async def run_one(index: int, prompt: Prompt, client: httpx.AsyncClient) -> None:
            async with semaphore:
                if abort:
                    errors[index] = f"not attempted: {abort[0]}"
                    return
                try:
                    payload = await asyncio.to_thread(payload_of, index, prompt)  # PNG encoding: off the loop
                except (ValueError, OSError) as error:
                    errors[index] = f"cannot send prompt {index}: {error}"
                    return
                try:
                    completed[index] = await self._complete_one(client, payload, abort, parse)
                except _AttemptError as failure:
                    errors[index] = failure.reason
                    if failure.fatal and not abort:
                        abort.append(failure.reason)

        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:
            await asyncio.gather(*(run_one(index, prompt, client) for index, prompt in enumerate(prompts)))
        if errors:
            raise RemoteReasonerError(
                self._failure_message(len(prompts), completed, errors), url=self.url, completed=completed, errors=errors
            )
        return [completed[index] for index in range(len(prompts))]

    async def _complete_one(
        self, client: httpx.AsyncClient, payload: bytes, abort: list[str], parse: Callable[[httpx.Response], T]
    ) -> T:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                return await self._attempt(client, payload, parse)
            except _AttemptError as failure:
                if not failure.retryable or attempt == attempts - 1 or abort:
                    if failure.retryable:
                        failure.reason = f"{failure.reason} (gave up after {attempt + 1} attempt(s))"
                    raise
                await asyncio.sleep(self._delay(attempt, failure.retry_after_s))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, client: httpx.AsyncClient, payload: bytes, parse: Callable[[httpx.Response], T]) -> T:
        try:
            response = await client.post(self.url, content=payload, headers={"Content-Type": "application/json"})
        except httpx.ConnectError as error:
            detail = _connect_failure(error)
            raise _AttemptError(
                f"could not reach {self.url}: {detail}; is the server running?", retryable=True, fatal=True
            ) from error
        except httpx.ConnectTimeout as error:
            raise _AttemptError(
                f"could not reach {self.url}: connecting timed out; is the server running and reachable?",
                retryable=True,
                fatal=True,
            ) from error
        except httpx.TimeoutException as error:
            raise _AttemptError(
                f"no complete response from {self.url} within {self.timeout_s:g} s (raise timeout_s for long generations)",
                retryable=True,
            ) from error
        except httpx.TransportError as error:
            raise _AttemptError(
                f"request to {self.url} failed: {type(error).__name__}: {error}", retryable=True
            ) from error
        status = response.status_code
        if status != 200:
            message = f"HTTP {status} from {self.url}: {_server_message(response)}"
            if status == 429 or status >= 500:
                raise _AttemptError(message, retryable=True, retry_after_s=_retry_after_s(response))
            hint = {
                401: " (check api_key / $OPENAI_API_KEY)",
                403: " (check api_key / $OPENAI_API_KEY)",
                404: f" (check base_url, usually ending in /v1, and the model name {self.model!r})",
            }.get(status, "")
            raise _AttemptError(message + hint, retryable=False, fatal=status in (401, 403, 404))
        return parse(response)

    def _response_json(self, response: httpx.Response) -> Any:
        """The JSON body of a 200 answer; a body that is not JSON is a (retryable) bad response."""
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _AttemptError(
                f"bad response from {self.url}: not JSON (starts with {response.text[:120]!r})", retryable=True
            ) from error

    def _parse_completion(self, response: httpx.Response) -> str:
        body = self._response_json(response)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise _AttemptError(
                f"bad response from {self.url}: no choices[0].message.content in {json.dumps(body)[:200]}",
                retryable=True,
            ) from error
        if not isinstance(content, str):
            raise _AttemptError(
                f"bad response from {self.url}: choices[0].message.content is {type(content).__name__}, not a string",
                retryable=True,
            )
        return content

    def _messages(self, prompt: Prompt) -> list[dict[str, Any]]:
        """The system message (if any) and the user message of text and image data URL parts."""
        messages: list[dict[str, Any]] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append({"role": "user", "content": user_content(prompt)})
        return messages

    def _payload(self, prompt: Prompt, settings: GenerationSettings) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(prompt),
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if settings.seed is not None:
            payload["seed"] = settings.seed
        payload.update(self.extra_body)
        return json.dumps(payload).encode()

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        base = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
        delay = base / 2 + self._random.uniform(0, base / 2)  # "equal jitter": spread retries, keep a floor
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_BACKOFF_S))
        return delay

    def _failure_message(self, n_prompts: int, completed: dict[int, str], errors: dict[int, str]) -> str:
        shown = sorted(errors)[:_FAILURES_SHOWN]
        listed = "; ".join(f"prompt {index}: {errors[index]}" for index in shown)
        more = f"; and {len(errors) - len(shown)} more (see .errors)" if len(errors) > len(shown) else ""
        if n_prompts == 1:
            return errors[0]
        return (
            f"{len(completed)} of {n_prompts} prompts completed, {len(errors)} failed "
            f"(the completed ones are in .completed): {listed}{more}"
        )


def user_content(prompt: Prompt) -> list[dict[str, Any]]:
    """The user message's content parts: text and image data URLs in ``<image>`` placeholder order.

    A prompt with images but no placeholders gets its images first, then the text.
    """
    user = prompt.user
    if prompt.images and IMAGE_PLACEHOLDER not in user:
        user = IMAGE_PLACEHOLDER * len(prompt.images) + user
    pieces = user.split(IMAGE_PLACEHOLDER)
    parts: list[dict[str, Any]] = []
    for index, piece in enumerate(pieces):
        if piece:
            parts.append({"type": "text", "text": piece})
        if index < len(prompt.images):
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(prompt.images[index])}})
    return parts


def image_data_url(source: ImageSource) -> str:
    """A ``data:`` URL of an image. PNG and JPEG files/bytes are sent as they are (no re-encoding);
    anything else is decoded and sent as PNG."""
    raw: bytes | None = None
    if isinstance(source, bytes):
        raw = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        raw = path.read_bytes()
    if raw is not None and raw.startswith(_PNG_MAGIC):
        return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
    if raw is not None and raw.startswith(_JPEG_MAGIC):
        return "data:image/jpeg;base64," + base64.b64encode(raw).decode("ascii")
    image = load_image(raw if raw is not None else source)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: the bytes go to a server, not to disk
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _check_placeholders(prompt: Prompt, index: int) -> None:
    n_placeholders = prompt.user.count(IMAGE_PLACEHOLDER)
    if n_placeholders and n_placeholders != len(prompt.images):
        raise ValueError(
            f"prompt {index}: the user message has {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but "
            f"{len(prompt.images)} image(s); give one image per placeholder"
        )


def _connect_failure(error: BaseException) -> str:
    """Why connecting failed, from the OS error under httpx's (often generic) one."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name ({cause.strerror or cause})"
        cause = cause.__cause__ or cause.__context__
    return str(error) or type(error).__name__


def _server_message(response: httpx.Response) -> str:
    """The error message a server put in its body: OpenAI's ``error.message``, FastAPI's ``detail``, or the text."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])[:300]
        if body.get("message"):
            return str(body["message"])[:300]
    return json.dumps(body)[:300]


def _retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
