"""Model registry: ``create_model``, ``list_models``, ``model_info``."""

from .network import Network
from .registry import ModelInfo, list_models, model_info, register_model
from .seed_cnn import SeedCNN
from .zoo import create_model

__all__ = ["Network", "ModelInfo", "SeedCNN", "create_model", "list_models", "model_info", "register_model"]
