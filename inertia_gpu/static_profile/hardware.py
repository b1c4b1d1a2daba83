"""The cards the static profile predicts for, and the per-scheduler rates of their pipes.

Figures and their sources (one table, so a reader can check every number):

- sm_90, H200 SXM: 132 SMs (the GH100 SXM configuration, NVIDIA H100 Tensor Core GPU
  Architecture whitepaper), 1.98 GHz: the maximum SM clock of GH100 SXM parts (1980 MHz, as
  nvidia-smi reports it), 4.8 TB/s HBM3e (NVIDIA H200 datasheet). 128 FP32 lanes, 64 FP64 lanes
  and 16 SFU lanes per SM (whitepaper).
- sm_80, A100 SXM4 80 GB: 108 SMs, 1.41 GHz boost, 2.039 TB/s HBM2e (NVIDIA A100 datasheet and
  Ampere whitepaper); 64 FP32, 32 FP64, 16 SFU lanes per SM.
- sm_100, B200 (HGX, 1000 W): 148 SMs, 8 TB/s HBM3e (NVIDIA B200 / DGX B200 datasheets);
  NVIDIA publishes no boost clock: 1.98 GHz is the figure of public GPU databases; FP64 at
  40 TFLOPS (datasheet) is ~64 FP64 lanes per SM at that clock, 128 FP32 lanes per SM.

Rates are warp-instructions per clock per scheduler (4 schedulers per SM, 32 lanes per warp):
a pipe with L lanes per SM serves L / 4 / 32 warp-instructions per clock per scheduler. Integer
ALU and IMAD (FMA-heavy) run at 0.5; MUFU and the F2F/F2I/I2F conversions at 0.125 (16 lanes per
SM); SHFL at 0.25; shared memory at 0.25 wavefronts (128 bytes per SM per clock); global and local
loads and stores at 0.25 instructions (32 LSU lanes per SM).
"""
from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULERS_PER_SM = 4
WARP = 32


@dataclass(frozen=True)
class Gpu:
    arch: str
    name: str
    sms: int
    clock_hz: float
    hbm_bytes_per_s: float
    registers_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_ctas_per_sm: int = 32
    shared_per_sm: int = 233472  # bytes usable by CTAs (228 KB on sm_90 / sm_100)
    shared_reserved_per_cta: int = 1024
    rates: dict = field(default_factory=dict)  # pipe -> warp-instructions per clock per scheduler
    sources: str = ""

    def warp_issue_per_s(self) -> float:
        """Warp-instructions the whole card can issue per second (one per scheduler per clock)."""
        return self.sms * SCHEDULERS_PER_SM * self.clock_hz


def _rates(fp32: float, fp64: float) -> dict:
    return {"fp32": fp32, "alu": 0.5, "imad": 0.5, "fp64": fp64, "mufu": 0.125, "conversion": 0.125,
            "shfl": 0.25, "shared": 0.25, "lsu": 0.25}


GPUS = {
    "sm_90": Gpu("sm_90", "NVIDIA H200 SXM", 132, 1.98e9, 4.8e12, rates=_rates(1.0, 0.5),
                 sources="H100 whitepaper (132 SMs, lanes per SM); 1980 MHz max SM clock; H200 datasheet (4.8 TB/s)"),
    "sm_80": Gpu("sm_80", "NVIDIA A100 SXM4 80GB", 108, 1.41e9, 2.039e12, shared_per_sm=167936,
                 rates=_rates(0.5, 0.25),
                 sources="A100 datasheet and Ampere whitepaper (108 SMs, 1.41 GHz, 2.039 TB/s)"),
    "sm_100": Gpu("sm_100", "NVIDIA B200", 148, 1.98e9, 8.0e12, rates=_rates(1.0, 0.5),
                  sources="B200 datasheet (148 SMs, 8 TB/s, FP64 40 TFLOPS); boost clock from public GPU databases"),
}


def gpu(arch: str) -> Gpu:
    if arch not in GPUS:
        raise KeyError(f"--arch: allowed {', '.join(GPUS)}; got {arch!r}")
    return GPUS[arch]


def capability(arch: str) -> int:
    """'sm_90' -> 90, the GPUTarget arch number."""
    return int(arch.split("_")[1])


def warps_per_sm(g: Gpu, registers: int, num_warps: int, shared: int) -> int:
    """Resident warps per SM: the tightest of registers (allocated per warp in units of 256), warps,
    CTAs and shared memory; whole CTAs only."""
    regs_per_warp = -(-max(registers, 1) * WARP // 256) * 256
    by_regs = (g.registers_per_sm // regs_per_warp) // num_warps
    by_warps = g.max_warps_per_sm // num_warps
    by_shared = g.shared_per_sm // (shared + g.shared_reserved_per_cta) if shared else g.max_ctas_per_sm
    return min(by_regs, by_warps, by_shared, g.max_ctas_per_sm) * num_warps
