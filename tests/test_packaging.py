"""The wheel carries the kernels inside the package: no top-level `kernels`, CUDA sources included."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_kernels_inside_the_package(tmp_path):
    # build from a copy of the tracked files: a build inside the checkout would leave build/ behind
    src = tmp_path / "src"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files"], check=True, capture_output=True,
                           text=True).stdout.split()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_bytes((ROOT / f).read_bytes())
    out = tmp_path / "wheel"
    # the build backend comes as README's install gets it (pip's isolated build environment)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("inertia_gpu-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "kernels" not in tops
    for needed in ("inertia_gpu/kernels/ensemble.py", "inertia_gpu/kernels/sgd.py", "inertia_gpu/kernels/philox.py",
                   "inertia_gpu/kernels/cpu_ensemble.py", "inertia_gpu/kernels/cuda/philox.cuh",
                   "inertia_gpu/kernels/cuda/ensemble.cu", "inertia_gpu/kernels/cuda/sgd.cu"):
        assert needed in names, needed
    # every module of the library is in the wheel: a subpackage left out of pyproject's list would
    # still import from a checkout or an editable install, and fail only for users of the wheel
    library = {str(p.relative_to(ROOT)) for p in (ROOT / "inertia_gpu").rglob("*.py") if "__pycache__" not in p.parts}
    kernels = {"inertia_gpu/" + str(p.relative_to(ROOT)) for p in (ROOT / "kernels").rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = sorted((library | kernels) - set(names))
    assert not missing, f"modules missing from the wheel (pyproject [tool.setuptools] packages): {missing}"
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "inertia-gpu = inertia_gpu.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
