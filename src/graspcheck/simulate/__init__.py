"""A built-in dataset: physics-simulated grasp attempts of a five-fingered hand (MuJoCo, Adroit hand)."""

from .dataset import SimulationSummary, simulate

__all__ = ["SimulationSummary", "simulate"]
