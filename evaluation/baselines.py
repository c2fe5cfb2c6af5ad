"""Baseline input-transformation defenses, for comparison with CSC.

Each maps (N, H, W, 3) float32 images in [0, 1] to the same shape and range.
JPEG, median filtering and bit-depth reduction are ART's preprocessors;
total-variation minimisation is scikit-image's Chambolle denoiser.
"""

from __future__ import annotations

import numpy as np


def jpeg(images: np.ndarray, quality: int = 75) -> np.ndarray:
    """JPEG compression at ``quality`` (ART ``JpegCompression``)."""
    from art.defences.preprocessor import JpegCompression

    out, _ = JpegCompression(clip_values=(0.0, 1.0), quality=quality, channels_first=False)(images)
    return out.astype(np.float32)


def median(images: np.ndarray, size: int = 3) -> np.ndarray:
    """``size`` x ``size`` median filter per channel (ART ``SpatialSmoothing``)."""
    from art.defences.preprocessor import SpatialSmoothing

    out, _ = SpatialSmoothing(window_size=size, channels_first=False, clip_values=(0.0, 1.0))(
        images)
    return out.astype(np.float32)


def bit_depth(images: np.ndarray, bits: int = 3) -> np.ndarray:
    """Quantise to ``bits`` bits per channel (ART ``FeatureSqueezing``)."""
    from art.defences.preprocessor import FeatureSqueezing

    out, _ = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bits)(images)
    return out.astype(np.float32)


def total_variation(images: np.ndarray, weight: float = 0.1) -> np.ndarray:
    """Total-variation minimisation (scikit-image ``denoise_tv_chambolle``), per image."""
    from skimage.restoration import denoise_tv_chambolle

    return np.stack([denoise_tv_chambolle(image, weight=weight, channel_axis=-1)
                     for image in images]).astype(np.float32)


BASELINES = {
    "JPEG q75": jpeg,
    "median 3x3": median,
    "bit depth 3": bit_depth,
    "TV": total_variation,
}
"""Row name -> defense, as the evaluation table names them."""
