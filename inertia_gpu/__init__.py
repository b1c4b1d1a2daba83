"""inertia-gpu: computational inertia I = 1/2|v|^2 + L of learning dynamics, on GPUs.

    from inertia_gpu import SimulationConfig, simulate, InertiaSGD, theory
"""
from .config import ConfigError, SimulationConfig

__version__ = "0.1.0"


def __getattr__(name):  # keep `import inertia_gpu` light: torch-heavy parts load on first use
    if name == "simulate":
        from .engine import simulate
        return simulate
    if name == "InertiaSGD":
        from .optim import InertiaSGD
        return InertiaSGD
    if name == "theory":
        from . import theory
        return theory
    raise AttributeError(name)


__all__ = ["ConfigError", "SimulationConfig", "simulate", "InertiaSGD", "theory", "__version__"]
