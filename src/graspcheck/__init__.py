"""graspcheck: tell from a camera image whether a robot grasp succeeded.

    import graspcheck
    result = graspcheck.train("data/")  # ImageNet-pretrained EfficientNet-Lite0, fine-tuned
    model = graspcheck.load(result.best)
    model.predict(["frame.png"])
    graspcheck.evaluate(result.best, "data/test")
    graspcheck.extract(["videos/"], "data/", label="success", sampling=graspcheck.Sampling(fps=5))
    graspcheck.augment_dataset("data/", "data_balanced/", per_class=1000)
"""

from .augment import augment_dataset
from .config import TrainConfig
from .console import GraspcheckError
from .evaluate import Evaluation, evaluate
from .extract import FrameShape, Sampling, extract
from .models import create_model, list_models, register_model
from .predict import GraspModel, Prediction, load
from .train import TrainResult, train

__version__ = "0.1.0"
__all__ = [
    "Evaluation",
    "FrameShape",
    "GraspModel",
    "GraspcheckError",
    "Prediction",
    "Sampling",
    "TrainConfig",
    "TrainResult",
    "augment_dataset",
    "create_model",
    "evaluate",
    "extract",
    "list_models",
    "load",
    "register_model",
    "train",
]
