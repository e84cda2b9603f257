"""How much memory a batch needs, how much the device has, and how to split a batch that would not fit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ptyopt.config import ModelConfig, ReconstructionConfig
from ptyopt.model.state import Geometry

MIB = 2**20


def activation_bytes_per_pattern(config: ModelConfig, window_px: tuple[int, int], complex_itemsize: int) -> int:
    """Estimated memory one pattern of a batch holds during a forward + backward pass [bytes].

    Autograd keeps, per slice, the wave entering it (pmode·omode waves) and the object patch (omode), and the
    far field; the backward pass adds about two transient waves per mode pair and the shifted probes; plus real
    per-pattern maps. Checked against the tensors autograd really saves (tests/model/test_compute.py).
    """
    pixels = window_px[0] * window_px[1]
    p, o, s = config.probe_modes, config.object_modes, config.n_slices
    waves = s * (p * o + o) + 3 * p * o + p
    return pixels * complex_itemsize * waves + pixels * (complex_itemsize // 2) * 8


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` [bytes]: CUDA's free memory, the host's MemAvailable for the CPU, else None."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.exists():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


@dataclass(frozen=True)
class MemoryPlan:
    """The estimate for one batch and the chunk size the run uses."""

    batch_size: int
    bytes_per_pattern: int
    fixed_bytes: int
    free_bytes: int | None
    chunk_patterns: int

    @property
    def batch_bytes(self) -> int:
        return self.fixed_bytes + self.batch_size * self.bytes_per_pattern

    @property
    def chunks_per_batch(self) -> int:
        return -(-self.batch_size // self.chunk_patterns)

    def describe(self) -> str:
        free = "unknown" if self.free_bytes is None else f"{self.free_bytes / MIB:,.0f} MiB"
        text = (f"memory estimate: {self.batch_bytes / MIB:,.0f} MiB for a batch of {self.batch_size} "
                f"({self.bytes_per_pattern / MIB:.2f} MiB per pattern + {self.fixed_bytes / MIB:,.0f} MiB "
                f"object and probe); free: {free}")
        if self.chunk_patterns < self.batch_size:
            text += f"; each batch runs in {self.chunks_per_batch} chunks of up to {self.chunk_patterns} patterns"
        return text


def plan_memory(config: ReconstructionConfig, geometry: Geometry, device: torch.device,
                complex_itemsize: int) -> MemoryPlan:
    """Chunk size: compute.chunk_patterns when a number; with 'auto' the whole batch when it fits in
    compute.memory_fraction of the free memory, else the largest chunk that does (at least 1)."""
    batch = config.solver.batch_size
    per_pattern = activation_bytes_per_pattern(config.model, geometry.window_px, complex_itemsize)
    canvas = geometry.canvas_px[0] * geometry.canvas_px[1] * config.model.n_slices * config.model.object_modes
    # the canvas transmission, its gradient and the amplitude/phase gradients and optimiser moments
    fixed = canvas * complex_itemsize * 6
    free = free_memory_bytes(device)
    chunk = config.compute.chunk_patterns
    if chunk == "auto":
        chunk = batch
        if free is not None:
            budget = config.compute.memory_fraction * free - fixed
            chunk = int(max(1, min(batch, budget // per_pattern)))
    return MemoryPlan(batch, per_pattern, fixed, free, min(int(chunk), batch))
