"""The contrastive trainer on a tiny Qwen2-VL: learning, logs, LoRA, freezing, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import random_image
from mmcascade import Embedder
from mmcascade.training import trainer as trainer_module
from mmcascade.training.config import TrainConfig
from mmcascade.training.trainer import train_from_config
from mmcascade.utils.config import config_from_dict


def write_dataset(folder: Path, n_records: int = 12, negatives: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(n_records):
        image = folder / f"img{index}.png"
        random_image(100 + index, (48, 48)).save(image)
        lines.append(
            {
                "query": {"text": f"caption number {index}", "instruction": "Find the image."},
                "positive": {"image": image.name, "text": f"item {index}"},
                "negatives": [{"text": f"distractor {index}-{k}"} for k in range(negatives)],
            }
        )
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def make_config(checkpoint: Path, data: Path, output: Path, **training: object) -> dict:
    return {
        "model": {
            "name_or_path": str(checkpoint),
            "head": "meta_tokens",
            "head_options": {"num_query_tokens": 2, "num_document_tokens": 4},
        },
        "data": {"train": str(data)},
        "loss": {"type": "matryoshka", "groups": [[1, 1], [2, 4]], "temperature": 0.05},
        "training": {
            "output_dir": str(output),
            "batch_size": 4,
            "micro_batch_size": 2,
            "learning_rate": 3e-3,
            "epochs": 2,
            "save_every": 2,
            "log_every": 1,
            "progress_bar": False,
            **training,
        },
    }


def weights(folder: Path) -> dict[str, torch.Tensor]:
    found = {}
    for file in sorted(folder.rglob("*.safetensors")):
        for name, tensor in load_file(str(file)).items():
            found[f"{file.relative_to(folder)}:{name}"] = tensor
    return found


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


def test_training_learns_logs_and_saves_a_loadable_model(
    qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path
) -> None:
    config = config_from_dict(TrainConfig, make_config(qwen2_vl_checkpoint, dataset, tmp_path / "run", epochs=4))
    final = train_from_config(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 13))  # 12 records / batch 4 = 3 steps x 4 epochs
    assert {"loss", "loss_1x1", "loss_2x4", "learning_rate", "grad_norm", "pairs_per_second"} <= set(log[0])
    assert log[0]["loss"] == pytest.approx((log[0]["loss_1x1"] + log[0]["loss_2x4"]) / 2, rel=1e-5)
    assert sum(e["loss"] for e in log[-3:]) < sum(e["loss"] for e in log[:3])
    assert train_from_config(config) == final  # resuming a finished run does nothing
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 12
    trained = Embedder.from_pretrained(final)
    assert trained.num_vectors("query") == 2 and trained.num_vectors("document") == 4
    assert len(list((tmp_path / "run").glob("checkpoint-*"))) <= 2  # keep_checkpoints
    assert not list(final.rglob("*.bin")) and not list(final.rglob("*.pt"))


def test_resume_after_a_crash_ends_where_an_uninterrupted_run_ends(
    qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uninterrupted = train_from_config(
        config_from_dict(TrainConfig, make_config(qwen2_vl_checkpoint, dataset, tmp_path / "a")), resume_from=None
    )
    real_step = trainer_module.contrastive_step
    calls = {"n": 0}

    def crash_on_fifth_step(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "contrastive_step", crash_on_fifth_step)
    config = config_from_dict(TrainConfig, make_config(qwen2_vl_checkpoint, dataset, tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train_from_config(config, resume_from=None)
    assert [p.name for p in sorted((tmp_path / "b").glob("checkpoint-*"))] == [
        "checkpoint-0000002",
        "checkpoint-0000004",
    ]
    monkeypatch.setattr(trainer_module, "contrastive_step", real_step)
    resumed = train_from_config(config, resume_from="latest")
    expected, got = weights(uninterrupted), weights(resumed)
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-6, rtol=1e-5, msg=name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_lora_trains_adapters_and_saves_merged_weights(
    qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path
) -> None:
    raw = make_config(qwen2_vl_checkpoint, dataset, tmp_path / "lora", epochs=1)
    raw["finetune"] = {
        "mode": "lora",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    }
    final = train_from_config(config_from_dict(TrainConfig, raw))
    before = load_file(str(qwen2_vl_checkpoint / "model.safetensors"))
    after = load_file(str(final / "backbone" / "model.safetensors"))
    assert not [name for name in after if "lora" in name]
    assert set(after) == set(before)
    q_name, mlp_name = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert not torch.allclose(after[q_name], before[q_name])  # adapters merged in
    assert torch.equal(after[mlp_name], before[mlp_name])  # not a LoRA target: untouched


def test_freeze_patterns_keep_weights_fixed(qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    raw = make_config(qwen2_vl_checkpoint, dataset, tmp_path / "frozen", epochs=1)
    raw["finetune"] = {"mode": "full", "freeze": ["backbone.model.model.visual.*"]}
    final = train_from_config(config_from_dict(TrainConfig, raw))
    before = load_file(str(qwen2_vl_checkpoint / "model.safetensors"))
    after = load_file(str(final / "backbone" / "model.safetensors"))
    visual = [name for name in before if name.startswith("visual.")]
    text = ["model.layers.0.self_attn.q_proj.weight"]
    assert visual and all(torch.equal(after[name], before[name]) for name in visual)
    assert not torch.equal(after[text[0]], before[text[0]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training": {"batchsize": 4}}, "unknown config key 'training.batchsize' \\(did you mean 'batch_size'\\?\\)"),
        ({"loss": {"groups": [[1, 1], [4, 4]]}}, "loss.groups entry \\(4, 4\\) is larger than the model's meta tokens"),
        ({"training": {"batch_size": 64}}, "cannot fill one batch"),
        ({"data": {"negatives_per_query": 5}}, "fewer hard negatives \\(first at line 1"),
        ({"finetune": {"freeze": ["no.such.*"]}}, "matches no parameter"),
        ({"finetune": {"mode": "lora", "lora": {"target_modules": ["qkv_proj"]}}}, "match no module"),
        ({"training": {"learning_rate": "fast"}}, "'training.learning_rate' must be a number"),
    ],
)
def test_config_errors_before_training(
    qwen2_vl_checkpoint: Path, dataset: Path, tmp_path: Path, change: dict, message: str
) -> None:
    raw = make_config(qwen2_vl_checkpoint, dataset, tmp_path / "bad")
    for section, values in change.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(ValueError, match=message):
        train_from_config(config_from_dict(TrainConfig, raw))
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_data_errors_name_the_line(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_records=4)
    lines = data.read_text().splitlines()
    lines[2] = "{not json"
    data.write_text("\n".join(lines) + "\n")
    config = config_from_dict(TrainConfig, make_config(qwen2_vl_checkpoint, data, tmp_path / "run"))
    with pytest.raises(ValueError, match=":3:"):
        train_from_config(config)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = config_from_dict(TrainConfig, make_config(qwen2_vl_checkpoint, empty, tmp_path / "run"))
    with pytest.raises(ValueError, match="empty.jsonl"):
        train_from_config(config)


def test_the_minilm_starter_continues_training_with_its_own_recipe(tmp_path: Path) -> None:
    """configs/starter.yaml's finetune section on the trained MiniLM starter (a backbone without a ``.model``)."""
    import yaml

    data = write_dataset(tmp_path / "data", n_records=4, negatives=1)
    recipe = yaml.safe_load((Path(__file__).parents[2] / "configs" / "starter.yaml").read_text())
    config = {
        "model": {"name_or_path": "starter-embedder-minilm"},
        "data": {"train": str(data)},
        "loss": recipe["loss"],
        "finetune": recipe["finetune"],
        "training": {"output_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 2, "progress_bar": False},
    }
    final = train_from_config(config_from_dict(TrainConfig, config))
    before, after = Embedder.from_pretrained("starter-embedder-minilm"), Embedder.from_pretrained(final)
    changed = {
        name for name, tensor in before.state_dict().items() if not torch.equal(tensor, after.state_dict()[name])
    }
    assert changed and all("lora_" in name or not name.startswith("backbone.text.") for name in changed)
    assert not any(name.startswith("backbone.vision.") for name in changed)  # frozen by the recipe


def test_the_starter_continues_training_its_head_on_cached_rows(tmp_path: Path) -> None:
    """configs/starter-fusion.yaml on the shipped starter: only the fusion head moves; the backbone has no weights
    of its own to move, and its rows come from the state cache."""
    import yaml

    data = write_dataset(tmp_path / "data", n_records=4, negatives=1)
    recipe = yaml.safe_load((Path(__file__).parents[2] / "configs" / "starter-fusion.yaml").read_text())
    config = {
        "model": {"name_or_path": "starter"},
        "data": {"train": str(data)},
        "loss": recipe["loss"],
        "finetune": recipe["finetune"],
        "training": {
            **{key: recipe["training"][key] for key in ("cache_backbone_states", "state_cache_dtype")},
            "output_dir": str(tmp_path / "run"),
            "batch_size": 4,
            "max_steps": 2,
            "progress_bar": False,
        },
    }
    final = train_from_config(config_from_dict(TrainConfig, config))
    before, after = Embedder.from_pretrained("starter"), Embedder.from_pretrained(final)
    changed = {
        name for name, tensor in before.state_dict().items() if not torch.equal(tensor, after.state_dict()[name])
    }
    assert changed and all(name.startswith("head.") for name in changed)
    assert list((tmp_path / "run" / "state_cache").glob("shard-*.safetensors"))  # rows were cached, then spilled
