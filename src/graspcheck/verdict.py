"""A verdict on one image, as ``GraspModel.predict`` and ``Client.predict`` both return it.

Without torch: the client imports it, and a robot that only talks to a server loads no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Prediction:
    source: str  # the file's path, or "<image N>" for the N-th input given in memory
    label: str
    success_probability: float

    def to_dict(self) -> dict:
        return asdict(self)
