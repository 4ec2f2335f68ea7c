"""reason(): cache hits skip generation, keys follow everything that shapes a completion, failures keep work."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.pipeline import ReasoningError, image_digest, reason, trace_key


class FakeReasoner(Reasoner):
    """Answers every prompt with a canned trace naming the prompt's last line; records calls."""

    def __init__(self, model_id: str = "fake-vlm", fail_on_call: int | None = None) -> None:
        self.model_id = model_id
        self.calls: list[list[Prompt]] = []
        self.fail_on_call = fail_on_call

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        self.calls.append(list(prompts))
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("server went away")
        return [f"<think>about {p.user.splitlines()[-2]}</think>\nAnswer: {p.user.splitlines()[-2]}" for p in prompts]


class DictCache:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.puts: list[dict[str, str]] = []

    def get_many(self, keys):
        return {key: self.data[key] for key in keys if key in self.data}

    def put_many(self, entries):
        self.puts.append(dict(entries))
        self.data.update(entries)


def items(n: int) -> list[Item]:
    return [Item(text=f"query {index}") for index in range(n)]


def test_reason_parses_in_order_and_batches():
    reasoner = FakeReasoner()
    progress = []
    traces = reason(reasoner, items(5), batch_size=2, on_batch=lambda done, total: progress.append((done, total)))
    assert [trace.answer for trace in traces] == [f"Query: query {index}" for index in range(5)]
    assert all(trace.complete for trace in traces)
    assert [len(call) for call in reasoner.calls] == [2, 2, 1]
    assert progress == [(2, 5), (4, 5), (5, 5)]


def test_cache_hits_skip_complete():
    cache = DictCache()
    first = reason(FakeReasoner(), items(3), cache=cache)
    assert len(cache.data) == 3
    again = FakeReasoner()
    second = reason(again, items(3), cache=cache)
    assert again.calls == []
    assert second == first
    partly = FakeReasoner()
    reason(partly, items(4), cache=cache)
    assert [len(call) for call in partly.calls] == [1]  # only the new item


def test_cache_that_takes_a_model_is_told_the_model_id():
    class ModelCache(DictCache):
        def __init__(self) -> None:
            super().__init__()
            self.models: list[str | None] = []

        def put_many(self, entries, model=None):
            self.models.append(model)
            super().put_many(entries)

    cache = ModelCache()
    reason(FakeReasoner("vlm-7b"), items(3), cache=cache, batch_size=2)
    assert cache.models == ["vlm-7b", "vlm-7b"]


def test_duplicate_items_generate_once():
    reasoner = FakeReasoner()
    traces = reason(reasoner, [Item(text="same")] * 3)
    assert [len(call) for call in reasoner.calls] == [1]
    assert len({trace.answer for trace in traces}) == 1


def test_key_follows_model_prompt_images_and_settings(tmp_path):
    image = Image.new("RGB", (4, 4), "red")
    prompt = Prompt("sys", "user <image>", (image,))
    settings = GenerationSettings()
    key = trace_key("m", prompt, settings)
    assert key == trace_key("m", Prompt("sys", "user <image>", (image.copy(),)), GenerationSettings())
    assert key != trace_key("other", prompt, settings)
    assert key != trace_key("m", Prompt("sys!", "user <image>", (image,)), settings)
    assert key != trace_key("m", Prompt("sys", "user  <image>", (image,)), settings)
    assert key != trace_key("m", prompt, GenerationSettings(max_new_tokens=512))
    assert key != trace_key("m", prompt, GenerationSettings(temperature=0.7, seed=1))
    assert key != trace_key("m", Prompt("sys", "user <image>", (Image.new("RGB", (4, 4), "blue"),)), settings)
    # files are hashed by content, not by name
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG one")
    by_path = trace_key("m", Prompt("s", "<image>", (path,)), settings)
    assert by_path == trace_key("m", Prompt("s", "<image>", (str(path),)), settings)
    assert image_digest(path) == image_digest(b"\x89PNG one")
    path.write_bytes(b"\x89PNG two")
    assert by_path != trace_key("m", Prompt("s", "<image>", (path,)), settings)


def test_changed_settings_or_template_miss_the_cache(tmp_path):
    cache = DictCache()
    reason(FakeReasoner(), items(2), cache=cache)
    budget = FakeReasoner()
    reason(budget, items(2), cache=cache, settings=GenerationSettings(max_new_tokens=64))
    assert len(budget.calls) == 1
    (tmp_path / "retrieval.yaml").write_text(
        "kind: retrieval\ndescription: d\nsystem: other system\nuser: |\n  {images}\n  Q: {text}\n  go\n"
    )
    templated = FakeReasoner()
    reason(templated, items(2), cache=cache, template_dir=tmp_path)
    assert len(templated.calls) == 1
    assert templated.calls[0][0].system == "other system"


def test_failure_mid_run_keeps_earlier_batches():
    cache = DictCache()
    failing = FakeReasoner(fail_on_call=2)
    with pytest.raises(ReasoningError, match="2 trace") as error:
        reason(failing, items(5), cache=cache, batch_size=2)
    assert error.value.kept == 2
    assert isinstance(error.value.__cause__, RuntimeError)
    assert "batch 2/3" in str(error.value)
    assert len(cache.data) == 2 and len(cache.puts) == 1
    resumed = FakeReasoner()
    traces = reason(resumed, items(5), cache=cache, batch_size=2)
    assert [len(call) for call in resumed.calls] == [2, 1]  # the first batch came from the cache
    assert [trace.answer for trace in traces] == [f"Query: query {index}" for index in range(5)]


def test_wrong_number_of_completions_is_an_error():
    class Short(FakeReasoner):
        def complete(self, prompts, settings):
            return super().complete(prompts, settings)[:-1]

    with pytest.raises(ReasoningError, match="returned 1 completion"):
        reason(Short(), items(2), cache=None)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        reason(FakeReasoner(), items(1), batch_size=0)
    with pytest.raises(ValueError, match="unknown task"):
        reason(FakeReasoner(), items(1), task="captioning")
    with pytest.raises(ValueError, match="get_many"):
        reason(FakeReasoner(), items(1), cache={})
    assert reason(FakeReasoner(), [], cache=DictCache()) == []


def test_a_partially_finished_batch_keeps_its_finished_traces_in_the_cache():
    from mmcascade.reasoner import GenerationSettings, ReasoningError, reason

    class PartlyFailing:
        model_id = "partly"

        def complete(self, prompts, settings):
            error = RuntimeError("2 of 3 prompts completed")
            error.completed = {0: "<think>a</think>\nAnswer: first", 2: "<think>c</think>\nAnswer: third"}
            raise error

    class DictCache:
        def __init__(self):
            self.data = {}

        def get_many(self, keys):
            return {key: self.data[key] for key in keys if key in self.data}

        def put_many(self, entries):
            self.data.update(entries)

    cache = DictCache()
    with pytest.raises(ReasoningError, match="the 2 trace"):
        reason(PartlyFailing(), ["one", "two", "three"], settings=GenerationSettings(max_new_tokens=4), cache=cache)
    assert sorted(cache.data.values()) == ["<think>a</think>\nAnswer: first", "<think>c</think>\nAnswer: third"]
