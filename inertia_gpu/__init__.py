"""inertia-gpu: computational inertia I = 1/2|v|^2 + L of learning dynamics, on GPUs.

    from inertia_gpu import SimulationConfig, simulate, InertiaSGD, theory
"""
from .config import ConfigError, SimulationConfig

__version__ = "0.1.0"


def __getattr__(name):  # keep `import inertia_gpu` light: torch-heavy parts load on first use
    import importlib
    if name == "simulate":
        return importlib.import_module(".engine", __name__).simulate
    if name == "InertiaSGD":
        return importlib.import_module(".optim", __name__).InertiaSGD
    if name == "theory":
        return importlib.import_module(".theory", __name__)
    raise AttributeError(name)


__all__ = ["ConfigError", "SimulationConfig", "simulate", "InertiaSGD", "theory", "__version__"]
