"""Fine-tune a Qwen2-VL checkpoint into a MetaEmbed multi-vector retriever with LoRA + GradCache.

    python examples/finetune_qwen2vl_lora.py --model Qwen/Qwen2-VL-2B-Instruct --train my_pairs.jsonl
    python examples/finetune_qwen2vl_lora.py --tiny      # a 1-minute smoke run on a tiny random model

my_pairs.jsonl has one record per line (image paths relative to the file):
    {"query": {"text": "a dog on a sofa", "instruction": "Find the photo."},
     "positive": {"image": "images/123.jpg"}, "negatives": [{"image": "images/456.jpg"}]}

Multi-GPU: torchrun --nproc_per_node 8 examples/finetune_qwen2vl_lora.py ... (positives of every GPU
become negatives of every query). The YAML equivalent runs with `mmcascade train embedder -c FILE`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from mmcascade.training.config import TrainConfig
from mmcascade.training.trainer import train_from_config
from mmcascade.utils.config import config_from_dict


def tiny_setup(folder: Path) -> tuple[str, str]:
    """A tiny random Qwen2-VL and 16 toy records, to try the script without a GPU or a download."""
    from mmcascade.backbones.testing import build_tiny_checkpoint

    model = build_tiny_checkpoint("qwen2_vl", folder / "tiny-qwen2-vl")
    lines = []
    for index, colour in enumerate(["red", "green", "blue", "yellow"] * 4):
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).ellipse([8, 8, 56, 56], fill=colour)
        image.save(folder / f"{index}.png")
        lines.append(
            {
                "query": {"text": f"a {colour} circle"},
                "positive": {"image": f"{index}.png"},
                "negatives": [{"text": f"a {colour} square"}],
            }
        )
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(model), str(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen2-VL-2B-Instruct")
    parser.add_argument("--train", help="training JSONL")
    parser.add_argument("--output", default="runs/qwen2vl-metaembed-lora")
    parser.add_argument("--tiny", action="store_true", help="smoke run on a tiny random model and toy data")
    args = parser.parse_args()
    model, train = args.model, args.train
    if args.tiny:
        model, train = tiny_setup(Path(tempfile.mkdtemp()))
    if not train:
        parser.error("--train is required (or pass --tiny)")
    config = config_from_dict(
        TrainConfig,
        {
            "model": {
                "name_or_path": model,
                "head": "meta_tokens",
                "head_options": {"num_query_tokens": 16, "num_document_tokens": 64},
                "dtype": "float32" if args.tiny else "bfloat16",
                "processor_options": {"image_max_pixels": 448 * 448},
            },
            "data": {"train": train},
            "loss": {"type": "matryoshka", "temperature": 0.03},
            "finetune": {
                "mode": "lora",
                "lora": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                "freeze": ["backbone.model.model.visual.*"],
            },
            "training": {
                "output_dir": args.output,
                "batch_size": 8 if args.tiny else 256,  # the contrastive batch ...
                "micro_batch_size": 4 if args.tiny else 16,  # ... encoded 16 at a time (GradCache)
                "learning_rate": 1e-4,
                "head_learning_rate": 1e-3,
                "epochs": 1,
                "save_every": 200,
            },
        },
    )
    final = train_from_config(config)
    print(f"trained embedder: {final}  (load it with Embedder.from_pretrained({str(final)!r}))")


if __name__ == "__main__":
    main()
