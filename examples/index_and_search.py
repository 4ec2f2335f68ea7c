"""Index a folder of images with the starter model, then search it by text and by image.

Run: python examples/index_and_search.py [FOLDER] [--data-dir DIR]
FOLDER defaults to the bundled demo collection; indexes go to DIR (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mmcascade import Index
from mmcascade.cli.demo import demo_collection
from mmcascade.data.collections import read_collection


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", type=Path, default=demo_collection())
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="mmcascade-example-")))
    args = parser.parse_args()

    index = Index.create(
        "example",
        "starter",
        backend="qdrant-edge",
        doc_budget=16,  # keep 16 of the 64 document vectors: a quarter of the space
        document_instruction="Represent the image.",
        query_instruction="Find the image that matches the caption.",
        data_dir=args.data_dir,
    )
    report = index.build(read_collection(args.folder, captions="payload"), batch_size=16)
    print(f"indexed {report.added} documents, skipped {len(report.skipped)}")
    for skipped in report.skipped:
        print(f"  skipped {skipped.source}: {skipped.reason}")

    for hit in index.search("a large red square in the middle", top_k=3, query_budget=4):
        print(f"{hit.score:7.3f}  {hit.id}  {hit.payload.get('caption', '')}")
    first_image = next(iter(sorted(args.folder.rglob("*.png"))))
    best = index.search({"image": first_image}, top_k=1, instruction="Represent the image.")[0]
    print(f"closest image to {first_image.name}: {best.id} ({best.score:.3f})")
    index.close()


if __name__ == "__main__":
    main()
