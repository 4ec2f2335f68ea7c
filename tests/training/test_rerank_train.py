"""Reranker training: the judgement loss by hand, learning to rank, resuming, data and config errors, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import random_image
from mmcascade.backbones import load_backbone
from mmcascade.cli.main import app
from mmcascade.data.items import Item
from mmcascade.rerank import Reranker, load_rerank_template, render_rerank_prompt
from mmcascade.rerank.local import LocalJudge
from mmcascade.training import rerank_train
from mmcascade.training.rerank_config import RerankerOptimConfig, RerankerTrainConfig
from mmcascade.training.rerank_train import RerankerTrainer, read_rerank_pairs, train_reranker_from_config
from mmcascade.utils.config import config_from_dict

CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
QUERIES = ["find the red circle", "find the blue square", "find the green triangle", "find the yellow star"]
# Unrelated texts: a tiny random model learns "shape caption: yes, anything else: no" in a few dozen steps, while
# telling one query's caption from another's (the query-candidate interaction) takes far longer than a test may.
UNRELATED = ["the cat sits on the mat", "an astronaut holds a helmet", "a grey rocket at night", "the quick brown fox"]
SHORT_TEMPLATE = "name: short\ndescription: ''\nsystem: Judge.\nuser: |\n  Q: {query}\n  C: {candidate}\n"


def _write(folder: Path, lines: list, name: str = "records.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    random_image(3).save(folder / "shape.png")
    (folder / "short.yaml").write_text(SHORT_TEMPLATE)  # short prompts keep the training tests fast
    path = folder / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _ranking_records(n_negatives: int = 2) -> list[dict]:
    return [
        {
            "query": {"text": query},
            "positive": {"text": caption},
            "negatives": [{"text": UNRELATED[(index + k) % len(UNRELATED)]} for k in range(n_negatives)],
        }
        for index, (query, caption) in enumerate(zip(QUERIES, CAPTIONS, strict=True))
    ]


def _config(model: Path, data: Path, output: Path, **training) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "template": str(data.parent / "short.yaml")},
        "finetune": {"mode": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "training": {
            "output_dir": str(output),
            "batch_size": 4,
            "learning_rate": 5e-3,
            "warmup_ratio": 0.0,
            "progress_bar": False,
            "log_every": 1,
            **training,
        },
    }


def test_step_loss_is_the_balanced_mean_of_minus_log_judgement_probabilities(
    qwen2_vl_checkpoint: Path, tmp_path: Path
) -> None:
    records = [
        {
            "query": {"text": "what shape is this", "instruction": "Find the matching picture."},
            "positive": {"text": "a red circle", "image": "shape.png"},
            "negatives": [{"text": "a blue square"}],
        },
        {
            "query": {"text": "a blue square", "image": "shape.png"},
            "positive": {"text": "blue square"},
            "negatives": [{"text": "a red circle"}, {"image": "shape.png"}],
        },
    ]
    data = _write(tmp_path, records)
    dataset = read_rerank_pairs(data)
    # 2 yes and 3 no pairs: a yes weighs 5 / (2 * 2), a no 5 / (2 * 3), so each label carries half the loss.
    assert [pair.label for pair in dataset.pairs] == [0, 1, 0, 1, 1]
    assert [pair.weight for pair in dataset.pairs] == pytest.approx([1.25, 5 / 6, 1.25, 5 / 6, 5 / 6])
    assert [pair.weight for pair in read_rerank_pairs(data, balance_labels=False).pairs] == [1.0] * 5

    backbone = load_backbone(qwen2_vl_checkpoint).eval()
    # By hand: the scores the reranker reports at inference, P(yes) = softmax([yes, no])[0].
    image = str(tmp_path / "shape.png")
    query_a = Item(text="what shape is this", instruction="Find the matching picture.")
    query_b = Item(text="a blue square", images=(image,))
    pairs = [
        (query_a, Item(text="a red circle", images=(image,)), True),
        (query_a, Item(text="a blue square"), False),
        (query_b, Item(text="blue square"), True),
        (query_b, Item(text="a red circle"), False),
        (query_b, Item(images=(image,)), False),
    ]
    scores = Reranker(LocalJudge(backbone, "tiny")).score([q for q, _, _ in pairs], [c for _, c, _ in pairs])
    losses = [
        -math.log(s.score) if positive else -math.log(1 - s.score)
        for s, (_, _, positive) in zip(scores, pairs, strict=True)
    ]
    weights = [1.25 if positive else 5 / 6 for _, _, positive in pairs]
    expected = sum(w * loss for w, loss in zip(weights, losses, strict=True)) / 5

    # Also by hand from continuation_logits: the rendered prompt, then "Answer:" and the [yes, no] logits.
    tokenizer = backbone.processor.tokenizer
    yes_no = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in (" yes", " no")]
    template = load_rerank_template()
    with torch.no_grad():
        for (query, candidate, positive), loss in zip(pairs, losses, strict=True):
            prompt = render_rerank_prompt(query, candidate, template)
            logits = backbone.continuation_logits(
                [Item(text=prompt.user, images=prompt.images)], [prompt.system], ["<think>\n</think>\nAnswer:"], yes_no
            )[0]  # (2,)
            by_hand = -torch.log_softmax(logits.double(), dim=0)[0 if positive else 1]
            assert float(by_hand) == pytest.approx(loss, rel=1e-4, abs=1e-5)

    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_(".visual." not in name)  # the gradient need not reach the vision tower here
    optim = RerankerOptimConfig(output_dir=str(tmp_path / "run"), batch_size=5, micro_batch_size=2)
    trainer = RerankerTrainer(backbone, dataset.pairs, optim)
    loss, n_pairs = trainer._train_step(list(dataset.pairs))  # three micro-batches of 2, 2 and 1 pairs
    assert n_pairs == 5
    assert loss == pytest.approx(expected, rel=1e-4)
    gradients = {name: parameter.grad for name, parameter in backbone.named_parameters() if parameter.grad is not None}
    assert any("q_proj" in name and bool(grad.abs().sum() > 0) for name, grad in gradients.items())


def test_training_ranks_every_positive_above_its_negatives(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "data", _ranking_records())
    config = _config(qwen2_vl_checkpoint, data, tmp_path / "run", epochs=10)
    # A tiny random model's output layer caps its logits (0.02-scale weights): it trains too, by name pattern.
    config["finetune"]["train"] = ["model.lm_head.weight"]
    final = train_reranker_from_config(config_from_dict(RerankerTrainConfig, config))

    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 31)) and all(entry["pairs"] == 4 for entry in log)
    first_epoch, last_epoch = (sum(entry["loss"] for entry in log[i : i + 3]) / 3 for i in (0, 27))
    assert last_epoch < first_epoch / 4

    reranker = Reranker(LocalJudge.from_pretrained(final), template=load_rerank_template(data.parent / "short.yaml"))
    for record in _ranking_records():
        candidates = [record["positive"], *record["negatives"]]
        scores = [score.score for score in reranker.score([record["query"]] * len(candidates), candidates)]
        assert scores[0] > max(scores[1:]), (record["query"], scores)


def test_killed_run_resumes_to_the_same_weights(qwen2_vl_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    data = _write(tmp_path / "data", _ranking_records(n_negatives=1))
    settings = {"max_steps": 6, "epochs": 3, "batch_size": 2, "micro_batch_size": 1, "save_every": 3}

    def config(name: str) -> RerankerTrainConfig:
        raw = _config(qwen2_vl_checkpoint, data, tmp_path / name, learning_rate=1e-3, **settings)
        raw["finetune"]["lora"]["dropout"] = 0.1  # random state must resume too
        return config_from_dict(RerankerTrainConfig, raw)

    straight = train_reranker_from_config(config("straight"))
    save = rerank_train.RerankerTrainer._save_checkpoint

    def save_then_die(self) -> None:
        save(self)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(rerank_train.RerankerTrainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_reranker_from_config(config("resumed"))
    monkeypatch.setattr(rerank_train.RerankerTrainer, "_save_checkpoint", save)
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = train_reranker_from_config(config("resumed"))
    expected, got = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert any("q_proj" in name for name in expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)
    log = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]
    assert train_reranker_from_config(config("resumed")) == resumed  # a finished run is a no-op


def test_bad_lines_are_skipped_and_listed(tmp_path: Path) -> None:
    good = {"query": {"text": "a circle"}, "positive": {"text": "red circle", "image": "shape.png"}}
    data = _write(
        tmp_path,
        [
            {**good, "negatives": [{"text": "blue square"}, {"text": "green star"}, {"text": "a cat"}]},
            "{not json",
            {"query": {"text": "a circle"}, "negatives": [{"text": "blue square"}]},
            {**good, "negatives": [{"image": "missing.png"}]},
            {**good, "negatives": [{"text": "x"}], "colour": "red"},
        ],
    )
    with pytest.warns(UserWarning, match="skipped 4 invalid line") as caught:
        dataset = read_rerank_pairs(data, negatives_per_query=2)
    assert [(pair.line, pair.label) for pair in dataset.pairs] == [(1, 0), (1, 1), (1, 1)]  # capped at 2 negatives
    assert [problem.line for problem in dataset.problems] == [2, 3, 4, 5]
    message = str(caught[0].message)
    for expected in ("records.jsonl:2: malformed JSON", ":3: missing key 'positive'", "missing.png", "colour"):
        assert expected in message
    assert dataset.pairs[0].item.images == (str(tmp_path / "shape.png"),)

    only_bad = _write(tmp_path / "bad", ["{not json", {"query": {"text": "x"}}])
    with pytest.raises(ValueError, match="No line holds a valid record") as raised:
        read_rerank_pairs(only_bad)
    assert "records.jsonl:1: malformed JSON" in str(raised.value)
    no_negatives = _write(tmp_path / "positives", [good])
    with pytest.raises(ValueError, match="no record has negatives"):
        read_rerank_pairs(no_negatives)


def test_config_typo_gets_a_did_you_mean(tmp_path: Path) -> None:
    raw = {"model": {"name_or_path": "x"}, "data": {"train": "t.jsonl", "negatives_per_qurey": 2}}
    with pytest.raises(ValueError, match="did you mean 'negatives_per_query'"):
        config_from_dict(RerankerTrainConfig, raw)
    with pytest.raises(ValueError, match="negatives_per_query must be >= 1"):
        config_from_dict(RerankerTrainConfig, {**raw, "data": {"train": "t.jsonl", "negatives_per_query": 0}})
    config = config_from_dict(RerankerTrainConfig, {**raw, "data": {"train": "t.jsonl"}})
    assert config.training.output_dir == "runs/reranker" and config.data.balance_labels

    (tmp_path / "reranker.yaml").write_text(
        "model: {name_or_path: x}\ndata: {train: t.jsonl}\ntraining: {learnig_rate: 1}\n"
    )
    result = CliRunner().invoke(app, ["train", "reranker", "--config", str(tmp_path / "reranker.yaml")])
    assert result.exit_code == 2 and "did you mean 'learning_rate'" in result.output
