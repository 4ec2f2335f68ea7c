"""Malformed request bodies never get a 5xx: every one is a 4xx in OpenAI's error shape (or a normal reply).

A seeded generator (hypothesis is not a dependency) mixes random bytes, truncated and mutated valid
requests, deep nesting, huge arrays, wrong types in every field, odd unicode, non-object top levels,
duplicate keys, NaN/Infinity and numbers too large, and posts them to the real app in process.
"""

from __future__ import annotations

import base64
import io
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from conftest import random_image
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.server.reasoner import create_reasoner_app
from mmcascade.server.reasoner.schema import MAX_JSON_DEPTH, MAX_JSON_VALUES, ApiError, parse_json_body

MAX_BODY_BYTES = 256 * 1024
CASES = 400


class EchoReasoner(Reasoner):
    """Echoes the prompt back, so odd text in a request also travels through a reply; counts characters."""

    model_id = "echo"

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        return [f"{prompt.system}|{prompt.user}|{len(prompt.images)}" for prompt in prompts]

    def count_tokens(self, text: str) -> int:
        return len(text)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_reasoner_app(EchoReasoner(), "echo", batch_window_s=0.0, max_body_bytes=MAX_BODY_BYTES)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# --------------------------------------------------------------------------------------------
# A tiny JSON writer that can also write what json.dumps refuses: raw tokens and duplicate keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """Text written as is: NaN, 1e999, 10**5000 digits, broken escapes."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """An object written member by member, so keys may repeat."""

    members: tuple[tuple[str, Any], ...]


def render(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{render(key)}:{render(item)}" for key, item in value.members) + "}"
    if isinstance(value, dict):
        return render(Pairs(tuple(value.items())))
    if isinstance(value, list):
        return "[" + ",".join(render(item) for item in value) + "]"
    return json.dumps(value)


def tiny_png_url() -> str:
    buffer = io.BytesIO()
    random_image(0, (8, 8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


PNG_URL = tiny_png_url()

ODD_TEXTS = [
    "",
    "\x00",
    "\ufeffBOM first",
    "\u202eright-to-left\u202c",
    "e\u0301\u0301\u0301",
    "🦀" * 50,
    "<image>",
    "a\r\nb\tc",
    "\U0010ffff",
    "x" * 5000,
]
#: escapes that json.loads accepts but are no valid text (lone surrogates), or that it refuses
ODD_ESCAPES = [r'"\ud800"', r'"\udfff tail"', r'"a\ud83d"', r'"\u00"', r'"\x41"', '"\\', '"tab\there"']
ODD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "-" + "9" * 5000, "1e-999", "0.0"]


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON-ish value, of any type, sometimes not JSON at all."""
    choices = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, 1, -1, 2, 20, 21, 2**31, 2**64, 2**70, -(2**70)]),
        lambda: rng.choice([0.5, 1.5, -0.0, 1e308, -1e-308, 2.0]),
        lambda: Raw(rng.choice(ODD_NUMBERS)),
        lambda: rng.choice(ODD_TEXTS),
        lambda: Raw(rng.choice(ODD_ESCAPES)),
        lambda: [],
        lambda: {},
        lambda: [odd_value(rng, depth + 1) for _ in range(rng.randint(1, 3))] if depth < 3 else [],
        lambda: {"url": rng.choice([PNG_URL, "data:image/png;base64,!!", 3])} if depth < 3 else {},
    ]
    return rng.choice(choices)()


def odd_part(rng: random.Random) -> Any:
    part = rng.choice(
        [
            {"type": "text", "text": odd_value(rng)},
            {"type": "text", "text": rng.choice(ODD_TEXTS)},
            {"type": "image_url", "image_url": {"url": PNG_URL}},
            {"type": "image_url", "image_url": odd_value(rng)},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"junk").decode()}},
            {"type": "image_url", "image_url": "data:image/gif;base64,R0lGODlhAQABAAAAACw="},  # a truncated GIF
            {"type": odd_value(rng)},
            odd_value(rng),
        ]
    )
    return part


def odd_message(rng: random.Random) -> Any:
    role = rng.choice(["system", "user", "assistant", "developer", "tool", None, 3, "USER"])
    content = rng.choice(
        [rng.choice(ODD_TEXTS), [odd_part(rng) for _ in range(rng.randint(0, 3))], odd_value(rng), Raw(r'"\ud800"')]
    )
    return rng.choice([{"role": role, "content": content}, {"role": role}, {"content": content}, odd_value(rng)])


FIELDS = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stream",
    "n",
    "stop",
    "logprobs",
    "top_logprobs",
    "continue_final_message",
    "add_generation_prompt",
]


def valid_body(rng: random.Random) -> dict[str, Any]:
    user: Any = rng.choice(["hi", [{"type": "text", "text": "see "}, {"type": "image_url", "image_url": PNG_URL}]])
    return {
        "model": "echo",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": user}],
        "max_tokens": rng.choice([1, 16]),
    }


def with_odd_fields(rng: random.Random) -> str:
    """A valid request with a few fields (any of them) replaced by values of any type."""
    body: dict[str, Any] = valid_body(rng)
    for field in rng.sample(FIELDS, rng.randint(1, 4)):
        body[field] = odd_value(rng)
    if rng.random() < 0.3:
        body["messages"] = [odd_message(rng) for _ in range(rng.randint(0, 4))]
    return render(body)


def deep(rng: random.Random) -> str:
    levels = rng.choice([MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 100, 1000, 100_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")])
    inner = opener * levels + "1" + (closer * levels if rng.random() < 0.5 else "")
    return rng.choice([inner, render({**valid_body(rng), "messages": Raw(inner)}), render({"stop": Raw(inner)})])


def huge(rng: random.Random) -> str:
    count = rng.choice([MAX_JSON_VALUES, MAX_JSON_VALUES + 1, 50_000])
    item = rng.choice(["1", '"x"', "[]", "{}", '{"role":"user","content":"hi"}'])
    array = "[" + ",".join([item] * count) + "]"
    members = "{" + ",".join(f'"k{index}":1' for index in range(count)) + "}"
    return rng.choice([array, members, render({**valid_body(rng), "messages": Raw(array)})])


def mutated(rng: random.Random) -> bytes:
    """A valid request cut short, or with a few bytes flipped, dropped or repeated."""
    data = bytearray(render(valid_body(rng)).encode())
    action = rng.choice(["truncate", "flip", "drop", "repeat"])
    if action == "truncate":
        return bytes(data[: rng.randrange(len(data))])
    for _ in range(rng.randint(1, 5)):
        index = rng.randrange(len(data))
        if action == "flip":
            data[index] = rng.randrange(256)
        elif action == "drop":
            del data[index]
        else:
            data[index:index] = data[index : index + rng.randint(1, 8)]
    return bytes(data)


def top_level(rng: random.Random) -> str:
    return rng.choice(
        ["null", "true", "1", '"text"', "[]", '[{"role":"user","content":"hi"}]', "", " ", "NaN", "{} {}", "{}}"]
    )


def duplicate_keys(rng: random.Random) -> str:
    good = valid_body(rng)
    members = [(key, value) for key, value in good.items()]
    members.insert(rng.randrange(len(members) + 1), (rng.choice(FIELDS), odd_value(rng)))
    members.append((rng.choice(FIELDS), odd_value(rng)))
    return render(Pairs(tuple(members)))


def encoded(rng: random.Random) -> bytes:
    text = render(valid_body(rng))
    return rng.choice(
        [
            b"\xef\xbb\xbf" + text.encode(),
            text.encode("utf-16"),
            text.encode("utf-32"),
            text.replace("hi", "h\udcff").encode("utf-8", "surrogatepass"),  # a surrogate as raw UTF-8 bytes
            text.replace("hi", "\xe9").encode("latin-1"),
            text.encode()[:-1] + b"\xc0\xaf}",  # an overlong encoding
        ]
    )


def odd_text(rng: random.Random) -> str:
    """A valid request whose texts are odd unicode (or escapes that are no valid text): echoed into the reply."""
    body = valid_body(rng)
    texts = [Raw(rng.choice(ODD_ESCAPES)) if rng.random() < 0.3 else rng.choice(ODD_TEXTS) for _ in range(2)]
    body["messages"] = [{"role": "system", "content": texts[0]}, {"role": "user", "content": texts[1]}]
    return render(body)


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))


GENERATORS = [random_bytes, with_odd_fields, with_odd_fields, with_odd_fields, deep, huge, mutated, mutated]
GENERATORS += [top_level, duplicate_keys, encoded, odd_text]


def fuzz_bodies(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for index in range(count):
        generator = GENERATORS[index % len(GENERATORS)]
        body = generator(rng)
        yield generator.__name__, body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")


def test_no_request_body_gets_a_5xx(client: TestClient) -> None:
    statuses: dict[int, int] = {}
    for index, (kind, body) in enumerate(fuzz_bodies(seed=1234, count=CASES)):
        response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        case = f"case {index} ({kind}): {body[:200]!r} -> {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, case
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 200:
            assert response.json()["object"] == "chat.completion", case
        else:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, case
            assert isinstance(error["message"], str) and error["message"], case
            assert len(response.content) < 4096, case  # messages quote what was sent, shortened
    # the generator reaches past the parser: replies and 400s, and the body limit
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > CASES / 2, statuses
    assert 413 in statuses, statuses


# --------------------------------------------------------------------------------------------
# The limits themselves
# --------------------------------------------------------------------------------------------


def refusal(body: str) -> str:
    with pytest.raises(ApiError) as caught:
        parse_json_body(body.encode("utf-8", "surrogatepass"))
    assert caught.value.status == 400
    return caught.value.message


def test_nesting_up_to_the_limit_parses_and_one_more_level_is_refused() -> None:
    assert parse_json_body(("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH).encode()) is not None
    assert f"nested more than {MAX_JSON_DEPTH} levels" in refusal("[" * (MAX_JSON_DEPTH + 1) + "]" * 33)
    assert f"nested more than {MAX_JSON_DEPTH} levels" in refusal('{"a":' * 100_000)
    # brackets inside strings are text, not nesting
    assert parse_json_body(json.dumps({"text": "[{" * 10_000}).encode()) == {"text": "[{" * 10_000}


def test_values_up_to_the_limit_parse_and_one_more_is_refused() -> None:
    # an array of n numbers counts n (its bracket + n - 1 commas)
    assert len(parse_json_body(json.dumps([0] * MAX_JSON_VALUES).encode())) == MAX_JSON_VALUES
    assert f"more than {MAX_JSON_VALUES} JSON values" in refusal(json.dumps([0] * (MAX_JSON_VALUES + 1)))
    assert "more than" in refusal(json.dumps({f"k{index}": [] for index in range(MAX_JSON_VALUES)}))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": ' + "9" * 5000 + "}", "not valid JSON"),
        ('"\\', "not valid JSON"),
        ('"a""b"' * 1000, "not valid JSON"),
        ("]" * 1000, "not valid JSON"),
    ],
)
def test_what_json_loads_refuses_is_a_400(body: str, expected: str) -> None:
    assert expected in refusal(body)


def test_the_scan_reads_each_character_once() -> None:
    """Escaped quotes that never close a string, repeated: a restart at every quote would be quadratic."""
    start = time.perf_counter()
    for body in ['"' + '\\"' * 2_000_000, '["' + "\\\\" * 2_000_000, "[" + '"a",' * 1_000_000]:
        with pytest.raises(ApiError):
            parse_json_body(body.encode())
    assert time.perf_counter() - start < 5  # about 0.1 s; quadratic would be hours
