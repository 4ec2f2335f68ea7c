"""Embed texts and images with meta tokens and rank documents by MaxSim at two budgets.

Run: python examples/embed_and_score.py [MODEL]
MODEL is an mmcascade folder, a Qwen2-VL-family folder or Hub id; by default a tiny random Qwen2-VL
is built offline (mechanics only: its scores carry no meaning).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from mmcascade import Embedder
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.scoring import maxsim_topk


def square(colour: str) -> Image.Image:
    image = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(image).rectangle([16, 16, 80, 80], fill=colour)
    return image


def main() -> None:
    if len(sys.argv) > 1:
        embedder = Embedder.from_pretrained(sys.argv[1])
    else:
        folder = build_tiny_checkpoint("qwen2_vl", Path(tempfile.mkdtemp()) / "tiny")
        embedder = Embedder.from_pretrained(folder, head="meta_tokens")
    documents = [{"image": square("red"), "text": "red"}, {"image": square("blue")}, "a paragraph about squares"]
    queries = [{"text": "a red square", "instruction": "Find the matching image."}]
    document_vectors = embedder.encode_documents(documents)
    query_vectors = embedder.encode_queries(queries)
    for query_budget, doc_budget in [(1, 1), (None, None)]:
        scores, ids = maxsim_topk(
            query_vectors, document_vectors, k=3, query_budget=query_budget, doc_budget=doc_budget
        )
        print(
            f"budget ({query_budget or 'all'}, {doc_budget or 'all'}): ranking {ids[0].tolist()} scores {scores[0].tolist()}"
        )


if __name__ == "__main__":
    main()
