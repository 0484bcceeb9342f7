"""Hands the simulator can use: a model file from an installed package, how it is mounted as a floating
hand, and its open and closed joint targets. Another hand is one more entry in HANDS."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

from ..console import GraspcheckError


@dataclass(frozen=True)
class Hand:
    name: str
    package: str  # the installed package that ships the model file
    model_file: str  # path inside that package
    base_body: str  # gets a free joint, welded to a mocap body that the script moves
    base_euler: tuple[float, float, float]  # palm-down orientation of the base body
    grasp_site: str  # the point that is brought to the object
    palm_gap: float  # distance from the grasp site up to the palm's underside, metres
    finger_close: dict[str, float]  # actuator -> target at full closure (open is 0)
    thumb_pose: dict[str, float]  # actuator -> target of the opposing thumb while closing
    strip_prefixes: tuple[str, ...] = ()  # joints/actuators of the model's own arm, replaced by the mount
    strip_bodies: tuple[str, ...] = ()  # scene parts of the model file that graspcheck builds itself
    strip_sites: tuple[str, ...] = ()
    strip_geoms: tuple[str, ...] = ()
    keep_materials: tuple[str, ...] = field(default=())

    def model_path(self) -> Path:
        # find_spec locates the installed package without importing it (gymnasium_robotics prints on import).
        spec = find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise GraspcheckError(
                f"the {self.name} hand needs the package {self.package!r}; install it with: pip install gymnasium-robotics"
            )
        path = Path(spec.submodule_search_locations[0]) / self.model_file
        if not path.is_file():
            raise GraspcheckError(f"the {self.name} hand model {self.model_file} is missing from {self.package}; reinstall it")
        return path


_ADROIT_FINGERS = {
    f"A_{finger}J{joint}": 1.6 for finger in ("FF", "MF", "RF", "LF") for joint in (2, 1, 0)
}

ADROIT = Hand(
    name="adroit",
    package="gymnasium_robotics",
    model_file="envs/assets/adroit_hand/adroit_relocate.xml",
    base_body="forearm",
    base_euler=(-1.57, 0.0, 3.14),
    grasp_site="S_grasp",
    palm_gap=0.05,
    finger_close=_ADROIT_FINGERS,
    thumb_pose={"A_THJ4": 0.5, "A_THJ3": 0.8, "A_THJ2": 0.0, "A_THJ1": 0.3, "A_THJ0": -0.4},
    strip_prefixes=("A_ART", "A_ARR", "ART", "ARR"),
    strip_bodies=("table", "Object", "vive_tracker"),
    strip_sites=("target",),
    strip_geoms=("ground",),
    keep_materials=("MatViz", "MatColl"),
)

HANDS = {hand.name: hand for hand in (ADROIT,)}
