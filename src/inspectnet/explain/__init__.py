"""Explainability: classic convolution kernels, Grad-CAM, filters and feature maps.

Imported on first use: the heatmap overlay (numpy and Pillow) serves the torch-free station
and service, which must not import torch through Grad-CAM.
"""

_LAZY = {
    **dict.fromkeys(("METHODS", "cams_and_logits", "energy_inside", "grad_cam", "grad_cam_batch", "pointing_game"),
                    "gradcam"),
    **dict.fromkeys(("KERNELS", "KernelError", "convolve2d", "convolve_panel", "format_matrix", "load_kernel"),
                    "kernels"),
    **dict.fromkeys(("LayerError", "conv_layer_names", "explain_image", "feature_maps", "first_layer_filters",
                     "save_feature_maps", "save_filter_grid"), "layers"),
    **dict.fromkeys(("heatmap_png_bytes", "overlay_heatmap", "save_png"), "overlay"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = sorted(_LAZY)
