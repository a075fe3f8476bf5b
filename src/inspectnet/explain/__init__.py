"""Explainability: classic convolution kernels, Grad-CAM, filters and feature maps."""

from .gradcam import (
    METHODS,
    cams_and_logits,
    energy_inside,
    grad_cam,
    grad_cam_batch,
    pointing_game,
)
from .kernels import KERNELS, KernelError, convolve2d, convolve_panel, format_matrix, load_kernel
from .layers import (
    LayerError,
    conv_layer_names,
    explain_image,
    feature_maps,
    first_layer_filters,
    save_feature_maps,
    save_filter_grid,
)
from .overlay import heatmap_png_bytes, overlay_heatmap, save_png

__all__ = [
    "KERNELS",
    "METHODS",
    "KernelError",
    "LayerError",
    "cams_and_logits",
    "conv_layer_names",
    "convolve2d",
    "convolve_panel",
    "energy_inside",
    "explain_image",
    "feature_maps",
    "first_layer_filters",
    "format_matrix",
    "grad_cam",
    "grad_cam_batch",
    "heatmap_png_bytes",
    "load_kernel",
    "overlay_heatmap",
    "pointing_game",
    "save_feature_maps",
    "save_filter_grid",
    "save_png",
]
