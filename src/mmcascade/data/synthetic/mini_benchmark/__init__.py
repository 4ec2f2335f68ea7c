"""A mini MMEB-V2 benchmark built offline: seven small datasets in MMEB's own on-disk format.

:func:`build_mini_benchmark` writes the local snapshot layout documented in
:mod:`mmcascade.evaluation.mmeb.dataset` (``mmeb.yaml``, ``annotations/<Name>/test.jsonl`` with exactly
MMEB's record fields, BEIR ``queries/corpus/qrels.jsonl`` for the visual-document task, images under
``image-tasks/`` and ``visdoc-tasks/<Name>/``), plus ``manifest.json``, ``README.md`` and
``metadata/<Name>.jsonl`` (per-query ground truth aligned with the annotations; no MMEB reader needs it).

Everything comes from code or from files inside installed packages, nothing is downloaded:

================  ============  ======  ==========================================================
dataset           parser        eval    source
================  ============  ======  ==========================================================
MiniTextile-CLS   image_cls     local   conformal-clip-data simulated textiles -> 3 defect labels
MiniDigits-CLS    image_cls     local   scikit-learn digits -> 10 labels "the digit seven"
MiniShapes-VQA    image_qa      local   easy-VQA *test* split: image + question -> answer
MiniScenes-t2i    image_t2i     local   caption -> scene image among held-out hard negatives
MiniScenes-i2t    image_i2t     local   scene image -> caption among held-out hard negatives
MiniScenes-VG     image_i2i_vg  local   scene image + referring expression -> the object's crop
MiniDocs          vidore        global  rendered catalogue pages; graded qrels (2 answer, 1 topic)
================  ============  ======  ==========================================================

None of the starter embedder's *training* images is used (see :data:`HELDOUT_POLICY`): scenes use only
held-out configurations (:func:`mmcascade.data.synthetic.starter_split.is_heldout_configuration`),
negatives included; textiles and digits come from samples the starter's training split (seed 0, scale
1.0) never picks, recomputed with the starter split's own helpers; easy-VQA comes from its test split
only, minus any image whose pixels equal an easy-VQA train image. :func:`training_image_overlap` checks a
build against a starter ``train.jsonl`` by pixel digests.

Modules: :mod:`.layout` (format, datasets, shared writers), :mod:`.label_tasks` (textiles, digits,
easy-VQA), :mod:`.scene_tasks` (t2i, i2t, VG), :mod:`.documents` (MiniDocs), :mod:`.build` (entry points,
manifest, README).
"""

from mmcascade.data.synthetic.mini_benchmark.build import (
    build_mini_benchmark,
    default_mini_benchmark_dir,
    ensure_mini_benchmark,
    training_image_overlap,
)
from mmcascade.data.synthetic.mini_benchmark.documents import PAGE_SIZE
from mmcascade.data.synthetic.mini_benchmark.layout import (
    ANNOTATIONS,
    BENCHMARK_NAME,
    DATASET_NAMES,
    DATASETS,
    DEFAULT_DIR_NAME,
    FORMAT_VERSION,
    HELDOUT_POLICY,
    IMAGE_PLACEHOLDER,
    IMAGE_ROOT,
    MMEB_FIELDS,
    STARTER_SCALE,
    STARTER_SEED,
    VIDORE_QUERY_INSTRUCTION,
    VIDORE_TARGET_INSTRUCTION,
    VISDOC_ROOT,
    DatasetSpec,
)
from mmcascade.data.synthetic.mini_benchmark.scene_tasks import VG_CROP
from mmcascade.data.synthetic.sources import pixel_digest

__all__ = [
    "ANNOTATIONS",
    "BENCHMARK_NAME",
    "DATASETS",
    "DATASET_NAMES",
    "DEFAULT_DIR_NAME",
    "FORMAT_VERSION",
    "HELDOUT_POLICY",
    "IMAGE_PLACEHOLDER",
    "IMAGE_ROOT",
    "MMEB_FIELDS",
    "PAGE_SIZE",
    "STARTER_SCALE",
    "STARTER_SEED",
    "VG_CROP",
    "VIDORE_QUERY_INSTRUCTION",
    "VIDORE_TARGET_INSTRUCTION",
    "VISDOC_ROOT",
    "DatasetSpec",
    "build_mini_benchmark",
    "default_mini_benchmark_dir",
    "ensure_mini_benchmark",
    "pixel_digest",
    "training_image_overlap",
]
