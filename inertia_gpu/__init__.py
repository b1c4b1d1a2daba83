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


def _kernels_from_checkout() -> None:
    """Run from a source tree without installing (PYTHONPATH=.): serve ./kernels as inertia_gpu.kernels.

    An installed package (wheel or editable) maps kernels/ to inertia_gpu.kernels itself; this only
    steps in when that mapping is absent.
    """
    import importlib.util
    import os
    import sys

    name = __name__ + ".kernels"
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    init = os.path.join(source, "__init__.py")
    if os.path.isfile(init):
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[source])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_kernels_from_checkout()
