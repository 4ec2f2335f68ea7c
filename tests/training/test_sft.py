"""Reasoner SFT: the completion loss's masking, training to memorise a trace, resuming, data and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import random_image
from mmcascade.backbones import load_backbone
from mmcascade.backbones.starter_reasoner.modeling_starter_reasoner import (
    StarterReasonerBackbone,
    StarterReasonerConfig,
)
from mmcascade.backbones.testing import build_tiny_llama
from mmcascade.data.items import Item
from mmcascade.reasoner.base import GenerationSettings
from mmcascade.reasoner.local import LocalReasoner
from mmcascade.reasoner.prompts import load_template, render_prompt
from mmcascade.training import sft
from mmcascade.training.sft import read_sft_examples, train_reasoner_from_config
from mmcascade.training.sft_config import ReasonerTrainConfig
from mmcascade.utils.config import config_from_dict

TRACE = "<think>a red circle on white</think>\nAnswer: a red circle"
SHORT_TRACE = "<think>red</think>\nAnswer: a circle"  # learnt in few steps by a tiny random model


@pytest.fixture(scope="module")
def starter_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("starter_reasoner")
    lm = build_tiny_llama(root / "lm")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = StarterReasonerBackbone.from_components(StarterReasonerConfig(lm_source=str(lm)))
        torch.nn.init.normal_(model.projector.cell_embeddings, std=1.0)  # make image positions matter
    model.save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module", params=["qwen2_vl", "starter_reasoner"])
def backbone(request: pytest.FixtureRequest, qwen2_vl_checkpoint: Path, starter_folder: Path):
    folder = qwen2_vl_checkpoint if request.param == "qwen2_vl" else starter_folder
    return load_backbone(folder).eval()


def _batch() -> tuple[list[Item], list[str | None], list[str]]:
    items = [
        Item(text="a red circle", instruction="Find the caption."),
        Item(text="what is <image>?", images=(random_image(0),)),
    ]
    return items, ["You reason.", None], [TRACE, "Answer: blue"]


def _plain_logits(backbone, item: Item, system: str | None, target_ids: list[int]) -> tuple[torch.Tensor, int]:
    """Logits of one unpadded prompt+target sequence from a plain forward, and the prompt length."""
    prompt = backbone.processor([item], [system])
    ids = torch.cat([prompt["input_ids"], torch.tensor([target_ids])], dim=1)  # (1, L)
    mask = torch.ones_like(ids)
    if isinstance(backbone, StarterReasonerBackbone):
        image_mask = torch.cat([prompt["image_mask"], torch.zeros((1, len(target_ids)), dtype=torch.bool)], dim=1)
        embeddings, _ = backbone.embed_inputs(
            {**prompt, "input_ids": ids, "attention_mask": mask, "image_mask": image_mask}
        )
        logits = backbone.lm(inputs_embeds=embeddings, attention_mask=mask).logits
    else:
        types = (ids == backbone.processor.image_token_id).to(torch.int32)
        vision = {k: prompt[k] for k in ("pixel_values", "image_grid_thw") if k in prompt}
        logits = backbone.model(input_ids=ids, attention_mask=mask, mm_token_type_ids=types, **vision).logits
    return logits[0], prompt["input_ids"].shape[1]


@torch.no_grad()
def test_completion_loss_is_cross_entropy_over_exactly_the_target_tokens(backbone) -> None:
    items, systems, targets = _batch()
    loss, n_tokens = backbone.completion_loss(items, systems, targets)
    tokenizer = backbone.processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    losses, expected_count = [], 0
    for item, system, target in zip(items, systems, targets, strict=True):
        target_ids = [*tokenizer(target, add_special_tokens=False)["input_ids"], end]
        logits, n_prompt = _plain_logits(backbone, item, system, target_ids)
        predicted = logits[n_prompt - 1 : n_prompt - 1 + len(target_ids)]  # position t predicts t+1
        losses.append(torch.nn.functional.cross_entropy(predicted.float(), torch.tensor(target_ids), reduction="none"))
        expected_count += len(target_ids)
    assert n_tokens == expected_count
    torch.testing.assert_close(loss, torch.cat(losses).mean(), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_batch_loss_is_the_token_weighted_mean_of_item_losses(backbone) -> None:
    items, systems, targets = _batch()
    loss, n_tokens = backbone.completion_loss(items, systems, targets)
    singles = [backbone.completion_loss([i], [s], [t]) for i, s, t in zip(items, systems, targets, strict=True)]
    assert n_tokens == sum(n for _, n in singles)
    torch.testing.assert_close(loss, sum(single * n for single, n in singles) / n_tokens, atol=1e-5, rtol=1e-5)
    cut, n_cut = backbone.completion_loss(items[:1], systems[:1], targets[:1], max_target_tokens=3)
    assert n_cut == 3 and torch.isfinite(cut)  # a cut trace keeps 3 tokens and no end token


def test_the_end_token_is_what_generation_stops_on(qwen2_vl_checkpoint: Path) -> None:
    backbone = load_backbone(qwen2_vl_checkpoint)
    backbone.model.generation_config.eos_token_id = backbone.processor.pad_token_id
    with pytest.raises(ValueError, match="not on <\\|im_end\\|>"):
        backbone.completion_loss(*_batch())


def _write_data(folder: Path, lines: list, image: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    random_image(3).save(folder / "shape.png")
    path = folder / "traces.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _config(model: Path, data: Path, output: Path, **training) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data)},
        "finetune": {"mode": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "training": {
            "output_dir": str(output),
            "batch_size": 1,
            "learning_rate": 1e-2,
            "warmup_ratio": 0.0,
            "progress_bar": False,
            "log_every": 1,
            **training,
        },
    }


def _generate(final: Path, record: dict) -> str:
    reasoner = LocalReasoner.from_pretrained(final)
    prompt = render_prompt(Item(text=record["item"]["text"]), load_template("retrieval"))
    return reasoner.complete([prompt], GenerationSettings(max_new_tokens=40))[0]


def test_full_finetune_memorises_a_trace_on_the_starter_reasoner(starter_folder: Path, tmp_path: Path) -> None:
    record = {"item": {"text": "a red circle"}, "trace": SHORT_TRACE}
    data = _write_data(tmp_path / "data", [record])
    # 25 character-level tokens: a tiny random model needs ~100 steps to memorise them (30 leave loss ~1).
    config = _config(starter_folder, data, tmp_path / "run", epochs=100, learning_rate=5e-3)
    config["finetune"] = {"mode": "full", "freeze": ["vision.*"]}
    final = train_reasoner_from_config(config_from_dict(ReasonerTrainConfig, config))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 100 and losses[-1] < losses[0] / 4
    assert _generate(final, record) == SHORT_TRACE


def test_lora_memorises_a_trace_and_changes_only_the_adapted_layers(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    record = {"item": {"text": "a red circle"}, "trace": SHORT_TRACE}
    data = _write_data(tmp_path / "data", [record])
    config = _config(qwen2_vl_checkpoint, data, tmp_path / "run", epochs=100, learning_rate=5e-3)
    # A tiny random model's output layer caps its logits (0.02-scale weights): it trains too, by name pattern.
    config["finetune"]["train"] = ["model.lm_head.weight"]
    final = train_reasoner_from_config(config_from_dict(ReasonerTrainConfig, config))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] / 4
    before = load_backbone(qwen2_vl_checkpoint).model.state_dict()
    after = load_backbone(final).model.state_dict()
    assert before.keys() == after.keys()  # merged: a plain model, no adapter weights left
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapted = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")
    assert "lm_head.weight" in changed and any(name.endswith(adapted) for name in changed)
    others = changed - {"lm_head.weight"}
    assert all(name.endswith(adapted) and "language_model" in name for name in others)

    assert _generate(final, record) == SHORT_TRACE


def test_killed_run_resumes_to_the_same_weights(qwen2_vl_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    lines = [
        {"item": {"text": f"shape number {index}", "image": "shape.png"}, "trace": f"{TRACE} {index}"}
        for index in range(4)
    ]
    data = _write_data(tmp_path / "data", lines)
    settings = {"max_steps": 6, "epochs": 3, "batch_size": 2, "micro_batch_size": 1, "save_every": 3}

    def config(name: str) -> ReasonerTrainConfig:
        raw = _config(qwen2_vl_checkpoint, data, tmp_path / name, learning_rate=1e-3, **settings)
        raw["finetune"]["lora"]["dropout"] = 0.1  # random state must resume too
        return config_from_dict(ReasonerTrainConfig, raw)

    straight = train_reasoner_from_config(config("straight"))
    save = sft.ReasonerTrainer._save_checkpoint

    def save_then_die(self) -> None:
        save(self)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(sft.ReasonerTrainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_reasoner_from_config(config("resumed"))
    monkeypatch.setattr(sft.ReasonerTrainer, "_save_checkpoint", save)
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = train_reasoner_from_config(config("resumed"))
    expected, got = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    changed = [name for name in expected if "q_proj" in name]
    assert changed
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)
    log = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]
    assert train_reasoner_from_config(config("resumed")) == resumed  # a finished run is a no-op


def test_bad_lines_are_skipped_and_listed(tmp_path: Path) -> None:
    good = {"item": {"text": "a red circle", "image": "shape.png"}, "trace": TRACE, "task": "retrieval"}
    data = _write_data(
        tmp_path,
        [
            good,
            "{not json",
            {"item": {"text": "x"}},
            {"item": {"image": "missing.png"}, "trace": TRACE},
            {"item": {"text": "x"}, "trace": TRACE, "task": "poetry"},
            {"item": {"text": "x", "colour": "red"}, "trace": TRACE},
        ],
    )
    with pytest.warns(UserWarning, match="skipped 5 invalid line") as caught:
        dataset = read_sft_examples(data)
    assert [example.line for example in dataset.examples] == [1]
    assert [problem.line for problem in dataset.problems] == [2, 3, 4, 5, 6]
    message = str(caught[0].message)
    for expected in ("traces.jsonl:2: malformed JSON", ":3: missing key 'trace'", "missing.png", "poetry", "colour"):
        assert expected in message
    assert dataset.examples[0].item.images == (str(tmp_path / "shape.png"),)
    only_bad = _write_data(tmp_path / "bad", ["{not json"])
    with pytest.raises(ValueError, match="no usable training example"):
        read_sft_examples(only_bad)


def test_config_typo_gets_a_did_you_mean(tmp_path: Path) -> None:
    raw = {"model": {"name_or_path": "x"}, "data": {"train": "t.jsonl"}, "training": {"learnig_rate": 1e-4}}
    with pytest.raises(ValueError, match="did you mean 'learning_rate'"):
        config_from_dict(ReasonerTrainConfig, raw)
    with pytest.raises(ValueError, match="mode"):
        config_from_dict(ReasonerTrainConfig, {**raw, "training": {}, "finetune": {"mode": "head"}})


def test_lora_on_the_starter_reasoner_saves_a_low_rank_delta(starter_folder: Path, tmp_path: Path) -> None:
    record = {"item": {"text": "a red circle"}, "trace": SHORT_TRACE}
    data = _write_data(tmp_path / "data", [record])
    config = _config(starter_folder, data, tmp_path / "run", epochs=3, learning_rate=1e-2)
    final = train_reasoner_from_config(config_from_dict(ReasonerTrainConfig, config))
    assert json.loads((final / "config.json").read_text())["lm_weights"] == "delta"  # not a full LM copy
    assert not (final / "lm").exists()
