"""Exact backend specifics: crash safety of upserts, compaction, storage dtype, corrupt shards."""

from __future__ import annotations

import pytest
import torch

from mmcascade.index.base import StoreSpec
from mmcascade.index.exact import ExactBackend, ExactOptions
from mmcascade.scoring import maxsim

SPEC = StoreSpec(dim=8, num_vectors=3)


def vectors(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, 8, generator=generator), dim=-1)


def test_an_upsert_killed_before_the_old_copy_is_dropped_keeps_one_newest_copy(tmp_path, monkeypatch):
    old, new = vectors(4, 0), vectors(1, 1)
    store = ExactBackend.create(tmp_path, SPEC)
    store.add(["a", "b", "c", "d"], old, [{"v": "old"}] * 4)

    def killed(self, ids):
        raise KeyboardInterrupt  # the process dies after the new shard is on disk

    monkeypatch.setattr(ExactBackend, "_drop_stale", killed)
    with pytest.raises(KeyboardInterrupt):
        store.add(["b"], new, [{"v": "new"}])
    monkeypatch.undo()
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 2  # both copies of "b" are on disk

    reopened = ExactBackend.open(tmp_path, SPEC)
    assert reopened.count() == 4
    (row,) = reopened.search(new, top_k=1)
    assert (row[0].id, row[0].payload) == ("b", {"v": "new"})
    assert row[0].score == pytest.approx(float(maxsim(new, new)[0, 0]), abs=1e-5)
    reopened.delete(["b"])  # removes the stale copy too: it must not come back
    assert ExactBackend.open(tmp_path, SPEC).contains(["b"]) == [False]


def test_a_half_written_shard_is_ignored(tmp_path):
    store = ExactBackend.create(tmp_path, SPEC)
    store.add(["a"], vectors(1, 0))
    (tmp_path / ".shard-00000002.tmp").write_bytes(b"\x00garbage")
    reopened = ExactBackend.open(tmp_path, SPEC)
    assert reopened.count() == 1
    assert not (tmp_path / ".shard-00000002.tmp").exists()


def test_a_corrupt_shard_is_named_in_the_error(tmp_path):
    ExactBackend.create(tmp_path, SPEC).add(["a"], vectors(1, 0))
    (shard,) = tmp_path.glob("shard-*.safetensors")
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(ValueError, match=shard.name):
        ExactBackend.open(tmp_path, SPEC)


def test_flush_merges_small_shards_without_changing_results(tmp_path):
    store = ExactBackend.create(tmp_path, SPEC, compact_below=10, max_small_shards=2)
    data = vectors(12, 3)
    for index in range(12):
        store.add([f"d{index}"], data[index : index + 1], [{"i": index}])
    store.delete(["d5"])
    before = store.search(data[:4], top_k=5)
    store.flush()
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 1
    assert store.search(data[:4], top_k=5) == before
    for index in range(12, 20):  # 8 more one-document shards, merged into groups of at most 5
        store.add([f"d{index}"], data[index % 12 : index % 12 + 1], [{"i": index}])
    before = store.search(data[:4], top_k=8)
    store.options = ExactOptions(compact_below=10, max_small_shards=2, merged_size=5)
    store.flush()
    sizes = sorted(len(shard.ids) for shard in store._shards.values())
    assert sizes == [3, 5, 11]  # 11 already merged; 8 singles -> 5 + 3
    assert store.search(data[:4], top_k=8) == before
    reopened = ExactBackend.open(tmp_path, SPEC)
    assert reopened.count() == 19
    assert reopened.search(data[:4], top_k=8) == before


def test_bfloat16_storage_halves_the_bytes_and_keeps_the_ranking(tmp_path):
    data = vectors(64, 4)
    ids = [str(index) for index in range(64)]
    exact32 = ExactBackend.create(tmp_path / "fp32", SPEC)
    exact16 = ExactBackend.create(tmp_path / "bf16", SPEC, dtype="bfloat16")
    exact32.add(ids, data)
    exact16.add(ids, data)
    size = {name: next((tmp_path / name).glob("shard-*")).stat().st_size for name in ("fp32", "bf16")}
    assert size["bf16"] < 0.6 * size["fp32"]
    top32 = [hit.id for hit in exact32.search(data[:1], top_k=1)[0]]
    assert [hit.id for hit in exact16.search(data[:1], top_k=1)[0]] == top32 == ["0"]
    with pytest.raises(ValueError, match="dtype"):
        ExactBackend.create(tmp_path / "bad", SPEC, dtype="int8")
    with pytest.raises(ValueError, match="unknown options"):
        ExactBackend.create(tmp_path / "bad2", SPEC, prefetch=3)
