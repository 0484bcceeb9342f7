"""graspcheck: tell from a camera image whether a robot grasp succeeded.

    import graspcheck
    result = graspcheck.train("data/", model="mobilenet_v3_small", epochs=10)
    model = graspcheck.load(result.best)
    model.predict(["frame.png"])
    graspcheck.evaluate(result.best, "data/test")
"""

from .console import GraspcheckError
from .evaluate import Evaluation, evaluate
from .models import create_model, list_models, register_model
from .predict import GraspModel, Prediction, load
from .train import TrainConfig, TrainResult, train

__version__ = "0.1.0"
__all__ = [
    "Evaluation",
    "GraspModel",
    "GraspcheckError",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "create_model",
    "evaluate",
    "list_models",
    "load",
    "register_model",
    "train",
]
