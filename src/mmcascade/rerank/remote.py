"""A :class:`JudgeModel` behind an OpenAI-compatible server with logprobs (vLLM, SGLang, ``mmcascade serve reasoner``).

The reasoning goes through :class:`~mmcascade.reasoner.remote.OpenAIReasoner` (plain chat completions).
The judgement is one request per pair whose messages end with the assistant reply prefix (up to
``Answer:``), sent with the vLLM/SGLang extension fields ``continue_final_message: true`` and
``add_generation_prompt: false`` so the server continues that reply instead of starting a new one, and
with ``max_tokens: 1, logprobs: true, top_logprobs: 20``. The ``" yes"`` and ``" no"`` entries of the
first token's ``top_logprobs`` are the judgement: their log-probabilities differ from the logits by the
same constant (the log partition function), so :func:`~mmcascade.rerank.judgement.yes_probability`
gives the same score as from the logits of an in-process judge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import httpx

from mmcascade.reasoner.base import Prompt
from mmcascade.reasoner.remote import OpenAIReasoner, _AttemptError
from mmcascade.rerank.base import JudgeModel
from mmcascade.rerank.judgement import NO, YES

#: the most alternatives OpenAI-compatible servers report per token (OpenAI's limit and vLLM's default)
MAX_TOP_LOGPROBS = 20
_TOKENS_SHOWN = 20


class OpenAIJudge(OpenAIReasoner, JudgeModel):
    """Reads the yes/no judgement from an OpenAI-compatible server that reports ``top_logprobs``.

    ``OpenAIJudge(base_url, model, **options)`` takes :class:`OpenAIReasoner`'s arguments (concurrency,
    timeouts, retries, ``extra_body``, ...) plus ``top_logprobs`` (1..20, default 20): how many of the most
    likely first tokens to ask for. The server must support ``continue_final_message`` and logprobs
    (vLLM, SGLang and ``mmcascade serve reasoner`` do; OpenAI's own API does not).

    :meth:`yes_no_logits` returns ``(yes_logprob, no_logprob)``: the log-probabilities of ``" yes"`` and
    ``" no"`` as the token after the reply prefix. A token the server lists only without its leading
    space or in another case (``"Yes"``) is accepted when the exact one is absent. When one of the two is
    not among the ``top_logprobs`` at all, the smallest reported log-probability stands in for it: an
    upper bound (the absent token is less likely than every listed one), so the score leans towards the
    absent answer only as far as the server's report allows. When both are absent it raises
    :class:`~mmcascade.reasoner.remote.RemoteReasonerError` naming the tokens the server did return.
    """

    def __init__(self, base_url: str, model: str, *, top_logprobs: int = MAX_TOP_LOGPROBS, **options: Any) -> None:
        super().__init__(base_url, model, **options)
        if (
            isinstance(top_logprobs, bool)
            or not isinstance(top_logprobs, int)
            or not 1 <= top_logprobs <= MAX_TOP_LOGPROBS
        ):
            raise ValueError(f"top_logprobs must be an int in 1..{MAX_TOP_LOGPROBS}; got {top_logprobs!r}")
        self.top_logprobs = top_logprobs

    def yes_no_logits(self, prompts: Sequence[Prompt], prefixes: Sequence[str]) -> list[tuple[float, float]]:
        """``(yes_logprob, no_logprob)`` after each prompt's assistant reply ``prefix``, in order.

        Raises :class:`~mmcascade.reasoner.remote.RemoteReasonerError` (naming the URL) if any pair failed.
        """
        return self._run_blocking(lambda: self.ayes_no_logits(prompts, prefixes))

    async def ayes_no_logits(self, prompts: Sequence[Prompt], prefixes: Sequence[str]) -> list[tuple[float, float]]:
        """The async form of :meth:`yes_no_logits`."""
        prefixes = list(prefixes)
        if len(prefixes) != len(prompts):
            raise ValueError(f"got {len(prefixes)} reply prefixes for {len(prompts)} prompts; pass one per prompt")
        for index, prefix in enumerate(prefixes):
            if not isinstance(prefix, str):
                raise ValueError(f"reply prefix {index} must be a string; got {type(prefix).__name__}")
        return await self._request_all(
            prompts, lambda index, prompt: self._judge_payload(prompt, prefixes[index]), self._parse_judgement
        )

    def _judge_payload(self, prompt: Prompt, prefix: str) -> bytes:
        """The request continuing ``prefix`` by one token; ``extra_body`` fields apply but cannot override these."""
        payload: dict[str, Any] = dict(self.extra_body)
        payload.update(
            {
                "model": self.model,
                "messages": [*self._messages(prompt), {"role": "assistant", "content": prefix}],
                "continue_final_message": True,
                "add_generation_prompt": False,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
        )
        return json.dumps(payload).encode()

    def _parse_judgement(self, response: httpx.Response) -> tuple[float, float]:
        body = self._response_json(response)
        try:
            top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError) as error:
            # The server answered but does not report logprobs: no retry or other prompt will change that.
            raise _AttemptError(
                f"{self.url} returned no choices[0].logprobs.content[0].top_logprobs (got "
                f"{json.dumps(body)[:200]}); the judge needs a server that supports logprobs and "
                "continue_final_message (vLLM, SGLang, mmcascade serve reasoner)",
                retryable=False,
                fatal=True,
            ) from error
        return judgement_logprobs(top, url=self.url)


def judgement_logprobs(top_logprobs: Any, *, url: str) -> tuple[float, float]:
    """``(yes, no)`` log-probabilities from one token's ``top_logprobs`` list of ``{token, logprob}``.

    Exact ``" yes"``/``" no"`` entries win; else the best entry whose stripped, lower-cased token is
    ``"yes"``/``"no"``. One absent: the smallest listed log-probability (an upper bound). Both absent:
    an error naming ``url`` and the tokens listed.
    """
    if not isinstance(top_logprobs, list):
        raise _AttemptError(
            f"bad response from {url}: top_logprobs is {type(top_logprobs).__name__}, not a list", retryable=True
        )
    entries: list[tuple[str, float]] = []
    for entry in top_logprobs:
        token = entry.get("token") if isinstance(entry, dict) else None
        logprob = entry.get("logprob") if isinstance(entry, dict) else None
        if (
            not isinstance(token, str)
            or isinstance(logprob, bool)
            or not isinstance(logprob, (int, float))
            or math.isnan(logprob)
        ):
            raise _AttemptError(
                f"bad response from {url}: a top_logprobs entry is not {{token: str, logprob: number}}: "
                f"{json.dumps(entry)[:120]}",
                retryable=True,
            )
        entries.append((token, float(logprob)))
    yes, no = _find(entries, YES), _find(entries, NO)
    if yes is None and no is None:
        shown = [token for token, _ in entries[:_TOKENS_SHOWN]]
        raise _AttemptError(
            f"neither {YES!r} nor {NO!r} is among the {len(entries)} most likely tokens {url} returned after the "
            f"reply prefix: {shown}; the served model does not answer yes/no there (check the model name and "
            "the rerank template, and that the server honours continue_final_message)",
            retryable=False,
        )
    floor = min(logprob for _, logprob in entries)
    return (yes if yes is not None else floor, no if no is not None else floor)


def _find(entries: list[tuple[str, float]], word: str) -> float | None:
    """The log-probability of ``word`` exactly, else of its best loose form (stripped, lower-cased), else None."""
    exact = [logprob for token, logprob in entries if token == word]
    if exact:
        return max(exact)
    loose = [logprob for token, logprob in entries if token.strip().lower() == word.strip()]
    return max(loose) if loose else None
