"""Head-only training on cached backbone states: same vectors, same training, one backbone pass per item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import random_image
from mmcascade import Embedder
from mmcascade.data.items import Item
from mmcascade.data.records import read_records
from mmcascade.training.config import TrainConfig
from mmcascade.training.state_cache import CACHE_DIR, CACHE_KEY, BackboneStateCache
from mmcascade.training.trainer import build_trainer
from mmcascade.utils.config import config_from_dict

SMALL = {"num_query_tokens": 2, "num_document_tokens": 3}
HEADS = {
    "self_attention": {"num_layers": 1, "source_layer": -2, **SMALL},
    "attention_pooler": {"num_heads": 4, "source_layer": 1, **SMALL},
}
N_RECORDS, N_SHARED_NEGATIVES = 8, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Distinct queries and positives; every record's two negatives come from one shared pool of three."""
    folder = tmp_path_factory.mktemp("state_cache_data")
    lines = []
    for index in range(N_RECORDS):
        random_image(300 + index, (40, 40)).save(folder / f"img{index}.png")
        negatives = [{"text": f"distractor {(index + k) % N_SHARED_NEGATIVES}"} for k in range(2)]
        lines.append(
            {
                "query": {"text": f"caption number {index}", "instruction": "Find the image."},
                "positive": {"image": f"img{index}.png", "text": f"item {index}"},
                "negatives": negatives,
            }
        )
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def make_config(
    checkpoint: Path, data: Path, output: Path, head: str = "self_attention", finetune: dict | None = None, **training
) -> TrainConfig:
    single_vector = head in ("last_token", "mean")
    loss = {"type": "infonce"} if single_vector else {"type": "matryoshka", "groups": [[1, 1], [2, 3]]}
    return config_from_dict(
        TrainConfig,
        {
            "model": {"name_or_path": str(checkpoint), "head": head, "head_options": _head_options(head)},
            "data": {"train": str(data), "document_instruction": "Represent the document."},
            "loss": {**loss, "temperature": 0.05},
            "finetune": finetune or {"mode": "head"},
            "training": {
                "output_dir": str(output),
                "batch_size": 4,
                "learning_rate": 3e-3,
                "epochs": 3,
                "save_every": 2,
                "log_every": 1,
                "progress_bar": False,
                **training,
            },
        },
    )


def frozen_embedder(checkpoint: Path, head: str) -> Embedder:
    embedder = Embedder.from_pretrained(checkpoint, head=head, head_options=HEADS[head])
    embedder.backbone.requires_grad_(False)
    embedder.config.document_instruction = "Represent the document."
    return embedder


def mixed_items(images: list) -> list[Item]:
    return [
        Item(text="a short query"),
        Item(images=(images[0],)),
        Item(text="a red square on a much longer line of text than the others", images=(images[1],)),
        Item(text="tiny", instruction="Find it."),
    ]


@pytest.mark.parametrize("head", sorted(HEADS))
def test_cached_states_give_the_live_vectors_alone_and_batched(
    qwen2_vl_checkpoint: Path, images: list, head: str
) -> None:
    embedder = frozen_embedder(qwen2_vl_checkpoint, head).eval()
    cache = BackboneStateCache(embedder)
    items = mixed_items(images)
    with torch.no_grad():
        for side in ("query", "document"):
            live = embedder(embedder.tokenize(items, side), side)  # (B, n, dim)
            batched = cache(cache.tokenize(items, side), side)  # (B, n, dim)
            torch.testing.assert_close(batched, live, atol=1e-5, rtol=0)
            for index, item in enumerate(items):
                alone = cache(cache.tokenize([item], side), side)  # (1, n, dim)
                torch.testing.assert_close(alone[0], live[index], atol=1e-5, rtol=0)
    assert cache.items_computed == 2 * len(items)  # once per (side, item): the single-item lookups were hits


@pytest.mark.parametrize("micro_batch_size", [None, 2])
def test_training_on_cached_states_matches_training_through_the_backbone(
    qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path, micro_batch_size: int | None
) -> None:
    finals, losses = {}, {}
    for cached in (False, True):
        output = tmp_path / f"cached-{cached}"
        config = make_config(
            qwen2_vl_checkpoint, dataset, output, cache_backbone_states=cached, micro_batch_size=micro_batch_size
        )
        finals[cached] = build_trainer(config, read_records(config.data.train)).train(resume_from=None)
        losses[cached] = [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert len(losses[True]) == 3 * N_RECORDS // 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-5, abs=1e-6)
    expected = load_file(str(finals[False] / "head" / "model.safetensors"))
    got = load_file(str(finals[True] / "head" / "model.safetensors"))
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=1e-4, msg=name)


def test_the_backbone_runs_once_per_distinct_item_and_a_resumed_run_reuses_the_spill(
    qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path
) -> None:
    config = make_config(qwen2_vl_checkpoint, dataset, tmp_path / "run", cache_backbone_states=True)
    trainer = build_trainer(config, read_records(config.data.train))
    seen = {"items": 0, "calls": 0}
    real_forward = trainer.embedder.backbone.forward

    def counting_forward(inputs: dict, *args: object, **kwargs: object) -> object:
        seen["items"] += inputs["input_ids"].shape[0]
        seen["calls"] += 1
        return real_forward(inputs, *args, **kwargs)

    trainer.embedder.backbone.forward = counting_forward
    trainer.train(resume_from=None)
    distinct = N_RECORDS + N_RECORDS + N_SHARED_NEGATIVES  # queries; positives and the negative pool (documents)
    steps = 3 * N_RECORDS // 4
    assert seen["items"] == distinct == trainer.state_cache.items_computed
    assert seen["calls"] <= 3 * (N_RECORDS // 4)  # at most one pass per side per step of the first epoch
    assert seen["items"] < steps * (4 + 4 + 8)  # what the live path would run
    spilled = list((tmp_path / "run" / CACHE_DIR).glob("shard-*.safetensors"))
    assert spilled
    reloaded = BackboneStateCache(trainer.embedder, spill_dir=tmp_path / "run" / CACHE_DIR)
    assert set(reloaded.states) == set(trainer.state_cache.states) and reloaded.items_computed == 0
    trainer.embedder.backbone.states_version = 7  # the same weights, but code that computes other states
    with pytest.raises(ValueError, match="another backbone"):
        BackboneStateCache(trainer.embedder, spill_dir=tmp_path / "run" / CACHE_DIR)
    del trainer.embedder.backbone.states_version
    BackboneStateCache(trainer.embedder, spill_dir=tmp_path / "run" / CACHE_DIR)  # back to the cached one
    with torch.no_grad():
        trainer.embedder.backbone.text_decoder().layers[0].mlp.up_proj.weight.add_(0.5)  # another backbone
    with pytest.raises(ValueError, match="another backbone"):
        BackboneStateCache(trainer.embedder, spill_dir=tmp_path / "run" / CACHE_DIR)


@pytest.mark.parametrize(
    ("head", "finetune", "message"),
    [
        ("self_attention", {"mode": "full"}, "frozen backbone"),
        ("self_attention", {"mode": "head", "train": ["backbone.*"]}, "frozen backbone"),
        ("last_token", {"mode": "full"}, "source_layer"),  # a pooling head has nothing to train alone
        ("meta_tokens", {"mode": "head"}, "source_layer"),
    ],
)
def test_the_switch_is_refused_unless_the_backbone_is_frozen_and_the_head_unified(
    qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path, head: str, finetune: dict, message: str
) -> None:
    config = make_config(
        qwen2_vl_checkpoint, dataset, tmp_path / "run", head=head, finetune=finetune, cache_backbone_states=True
    )
    with pytest.raises(ValueError, match=CACHE_KEY) as error:
        build_trainer(config, read_records(config.data.train))
    assert message in str(error.value)


def _head_options(head: str) -> dict:
    return HEADS.get(head, SMALL if head == "meta_tokens" else {})
