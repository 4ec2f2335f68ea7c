"""Training throughput: GradCache against the plain loop at the same micro-batch, in one run.

    python benchmarks/train_throughput.py [--model starter-base|PATH] [--batch 32] [--micro 8] [--repeats 3]

The plain loop runs micro-batches of ``--micro`` pairs (each its own contrastive batch); GradCache runs
one contrastive batch of ``--batch`` pairs encoded ``--micro`` at a time. GradCache encodes every item
twice (once without a graph), so its expected cost is about (2F + B) / (F + B) ~ 1.3x per pair, where a
backward pass B costs about two forwards F. Prints pairs/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image, ImageDraw

from mmcascade import Embedder, Item
from mmcascade.training.config import LossConfig
from mmcascade.training.grad_cache import ContrastiveBatch, contrastive_step
from mmcascade.training.objective import ContrastiveLoss


def scene(index: int) -> Image.Image:
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    image = Image.new("RGB", (128, 128), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse([10 + index % 40, 30, 60 + index % 40, 80], fill=colours[index % 6])
    draw.rectangle([70, 40, 110, 90], fill=colours[(index + 2) % 6])
    return image


def make_batch(size: int, offset: int) -> ContrastiveBatch:
    return ContrastiveBatch(
        queries=[
            Item(text=f"a {i % 6} circle left of a square number {i}", instruction="Find the image.")
            for i in range(offset, offset + size)
        ],
        positives=[Item(images=(scene(i),)) for i in range(offset, offset + size)],
        negatives=[[Item(images=(scene(i + 3),))] for i in range(offset, offset + size)],
    )


def seconds_per_pair(embedder: Embedder, loss: ContrastiveLoss, batch: int, micro: int, grad_cache: bool) -> float:
    started = time.perf_counter()
    if grad_cache:
        contrastive_step(embedder, make_batch(batch, 0), loss, micro_batch_size=micro)
    else:
        for offset in range(0, batch, micro):
            contrastive_step(embedder, make_batch(micro, offset), loss, micro_batch_size=None)
    elapsed = time.perf_counter() - started
    embedder.zero_grad(set_to_none=True)
    return elapsed / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="starter-base")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    embedder = Embedder.from_pretrained(args.model, head="meta_tokens")
    embedder.train()
    loss = ContrastiveLoss(LossConfig(), embedder)
    seconds_per_pair(embedder, loss, args.micro, args.micro, grad_cache=False)  # warm-up
    plain, cached = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        plain.append(seconds_per_pair(embedder, loss, args.batch, args.micro, grad_cache=False))
        cached.append(seconds_per_pair(embedder, loss, args.batch, args.micro, grad_cache=True))
    plain_s, cached_s = statistics.median(plain), statistics.median(cached)
    print(f"model {args.model}, {torch.get_num_threads()} threads, {args.repeats} repeats (median)")
    print(f"plain loop, micro-batch {args.micro:>3}:            {1 / plain_s:7.2f} pairs/s")
    print(f"GradCache, batch {args.batch:>3} in chunks of {args.micro:>3}: {1 / cached_s:7.2f} pairs/s")
    print(f"GradCache time per pair / plain: {cached_s / plain_s:.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
