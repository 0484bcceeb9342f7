"""graspcheck: tell from a camera image whether a robot grasp succeeded.

    import graspcheck
    result = graspcheck.train("data/")  # ImageNet-pretrained EfficientNet-Lite0, fine-tuned
    model = graspcheck.load(result.best)
    model.predict(["frame.png"])
    graspcheck.evaluate(result.best, "data/test")
    graspcheck.extract(["videos/"], "data/", label="success", sampling=graspcheck.Sampling(fps=5))
    graspcheck.augment_dataset("data/", "data_balanced/", per_class=1000)

Names are imported on first use: `import graspcheck` is quick and changes nothing global, and a
simulation worker that needs no torch loads none.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Client": "client",
    "Evaluation": "evaluation",
    "FrameShape": "extraction",
    "GraspModel": "predict",
    "GraspcheckError": "console",
    "Prediction": "verdict",
    "Sampling": "extraction",
    "TrainConfig": "config",
    "TrainResult": "training",
    "augment_dataset": "augment",
    "create_model": "models",
    "evaluate": "evaluation",
    "extract": "extraction",
    "list_models": "models",
    "load": "predict",
    "register_model": "models",
    "train": "training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'graspcheck' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
