"""Moved to :mod:`mmcascade.data.synthetic.starter_split` (the split) and :mod:`mmcascade.data.synthetic.sources`
(labels, image sizes, the VQA answer types); this alias is kept for one release."""

from mmcascade.data.synthetic.sources import (
    DIGIT_SIZE,
    DIGIT_WORDS,
    INSTALL_HINT,
    TEXTILE_LABELS,
    TEXTILE_SIZE,
    VQA_SHAPE_ANSWERS,
    VQA_YES_NO_ANSWERS,
    scaled_count,
)
from mmcascade.data.synthetic.starter_split import (
    DATASET_NAME,
    FORMAT_VERSION,
    HELDOUT_CONFIG_BUCKETS,
    INSTRUCTIONS,
    N_HARD_NEGATIVES,
    PLAN,
    SPLITS,
    TASK_DESCRIPTIONS,
    build_starter_data,
    is_heldout_configuration,
)

__all__ = [
    "DATASET_NAME",
    "DIGIT_SIZE",
    "DIGIT_WORDS",
    "FORMAT_VERSION",
    "HELDOUT_CONFIG_BUCKETS",
    "INSTALL_HINT",
    "INSTRUCTIONS",
    "N_HARD_NEGATIVES",
    "PLAN",
    "SPLITS",
    "TASK_DESCRIPTIONS",
    "TEXTILE_LABELS",
    "TEXTILE_SIZE",
    "VQA_SHAPE_ANSWERS",
    "VQA_YES_NO_ANSWERS",
    "build_starter_data",
    "is_heldout_configuration",
    "scaled_count",
]
