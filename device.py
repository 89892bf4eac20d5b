"""
Facts about the hardware a script runs on, shared by every script: which device, the mixed-precision
context for a dtype, and the device's peak FLOP/s (for MFU).

References:
[10] Chowdhery et al. 2022, PaLM, appendix B (model FLOPs utilisation, MFU)
"""
import re
import time
from contextlib import nullcontext
from functools import lru_cache

import torch

DTYPES = ('float32', 'bfloat16', 'float16')
# Every script's defaults: the GPU when there is one, in bfloat16 where it has bf16 units (float16 elsewhere, which
# train.py pairs with a GradScaler); float32 on a CPU, where lower precision is rarely faster.
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
DTYPE = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if torch.cuda.is_available() else 'float32'


def check_device(device):
    """'cpu', 'cuda', 'cuda:1', 'mps', ... -> its type, e.g. 'cuda'; ValueError if torch cannot use it."""
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1', 'mps', ...") from None
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but torch sees no GPU; use --device=cpu")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for but MPS is not available; use --device=cpu")
    return device_type


def torch_dtype(dtype):
    """'float32' | 'bfloat16' | 'float16' -> the torch dtype; ValueError for anything else."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not known; use 'float32', 'bfloat16' or 'float16'")
    return getattr(torch, dtype)


def autocast(device_type, dtype):
    """The context every forward pass runs in: autocast to bfloat16/float16, or nothing for float32."""
    if torch_dtype(dtype) == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch_dtype(dtype))


# Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets, FLOP/s: (name pattern, bf16, fp16, tf32, fp32).
# float32 counts TF32 tensor cores when torch allows TF32 matmuls, else plain FP32. None: no such hardware path.
PEAK_FLOPS = [
    (r'H200|GH200', 989e12, 989e12, 494.7e12, 66.9e12),
    (r'H100.*PCIe', 756e12, 756e12, 378e12, 51.2e12),
    (r'H100.*NVL', 835e12, 835e12, 417.5e12, 60e12),
    (r'H100', 989e12, 989e12, 494.7e12, 66.9e12),  # SXM
    (r'A100', 312e12, 312e12, 156e12, 19.5e12),
    (r'L40S', 362e12, 362e12, 183e12, 91.6e12),
    (r'\bL4\b', 121e12, 121e12, 60e12, 30.3e12),
    (r'\bA10\b', 125e12, 125e12, 62.5e12, 31.2e12),
    (r'A6000', 154.8e12, 154.8e12, 77.4e12, 38.7e12),
    (r'4090', 165.2e12, 165.2e12, 82.6e12, 82.6e12),
    (r'3090', 71e12, 71e12, 35.6e12, 35.6e12),
    (r'V100', None, 125e12, None, 15.7e12),
    (r'\bT4\b', None, 65e12, None, 8.1e12),
]


def peak_flops(device_type, dtype):
    """Peak FLOP/s of this device in dtype ('bfloat16'|'float16'|'float32') for MFU [10] -> (flops, label).
    Known GPUs come from the table; a CPU or an unlisted GPU gets a big matmul timed now."""
    dtype = str(dtype).removeprefix('torch.')
    if device_type == 'cuda' and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for pattern, bf16, fp16, tf32, fp32 in PEAK_FLOPS:
            if re.search(pattern, name):
                tf32_on = torch.get_float32_matmul_precision() != 'highest'  # train.py turns TF32 on
                flops = {'bfloat16': bf16, 'float16': fp16, 'float32': tf32 if tf32_on else fp32}.get(dtype)
                if flops:
                    return flops, f'{name} {dtype}{" (tf32)" if dtype == "float32" and tf32_on else ""} datasheet peak'
    return measured_flops(device_type, dtype), f'measured by a {device_type} {dtype} matmul'


@lru_cache(maxsize=None)
def measured_flops(device_type, dtype):
    """FLOP/s of the fastest of many square matmuls: a peak, not an average dragged down by other processes."""
    n = 1024 if device_type == 'cpu' else 4096
    g = torch.Generator(device_type).manual_seed(0)  # its own generator: measuring shifts no caller's randomness
    a, b = (torch.randn(n, n, generator=g, device=device_type, dtype=getattr(torch, dtype)) for _ in range(2))
    sync = torch.cuda.synchronize if device_type == 'cuda' else (lambda: None)
    a @ b  # warm-up: the first call pays for allocation and kernel selection
    sync()
    best, t_end = float('inf'), time.perf_counter() + 0.3
    for rep in range(1000):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
        if rep >= 3 and time.perf_counter() > t_end:
            break
    return 2 * n ** 3 / best
