"""device.py: which device a setting names, the mixed-precision context of a dtype, and the peak FLOP/s for MFU."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import device  # noqa: E402
from device import autocast, check_device, peak_flops  # noqa: E402

torch.set_num_threads(1)


def test_check_device_names_the_type_or_raises_one_line():
    """check_device: a usable device gives its type; an unknown one, or a GPU torch cannot see, is a one-line
    ValueError naming it."""
    assert check_device('cpu') == 'cpu'
    bad = ['tpu', 'cuda:x'] + ([] if torch.cuda.is_available() else ['cuda', 'cuda:1'])
    for device in bad:
        with pytest.raises(ValueError) as e:
            check_device(device)
        assert repr(device) in str(e.value) and '\n' not in str(e.value)


def test_autocast_runs_matmuls_in_the_asked_dtype_and_float32_untouched():
    """float32 is no autocast at all (a matmul stays float32); bfloat16 makes the same matmul bfloat16; an unknown
    dtype is a one-line ValueError that lists the valid ones."""
    a = torch.randn(8, 8)
    with autocast('cpu', 'float32'):
        assert (a @ a).dtype == torch.float32 and not torch.is_autocast_enabled('cpu')
    with autocast('cpu', 'bfloat16'):
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32  # and nothing is left switched on afterwards
    with pytest.raises(ValueError, match=r"dtype='fp8' is not known; use 'float32', 'bfloat16' or 'float16'"):
        autocast('cpu', 'fp8')


def test_peak_flops_table_and_measurement(monkeypatch):
    """Known GPUs read the datasheet table (H100 SXM bf16 989 TFLOP/s; 'A100' is not taken for 'A10'; float32
    counts TF32 only when torch allows it); a CPU's peak is the 2 n^3 FLOPs of a 1024 x 1024 matmul over its
    time (a clock that moves 10 ms a reading: each timed product takes exactly 10 ms)."""
    ticks = iter(range(10**6))
    device.measured_flops.cache_clear()
    monkeypatch.setattr(device.time, 'perf_counter', lambda: next(ticks) * 0.01)
    flops, label = peak_flops('cpu', 'float32')
    assert flops == pytest.approx(2 * 1024 ** 3 / 0.01) and 'measured by a cpu float32 matmul' == label
    device.measured_flops.cache_clear()
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    for name, dtype, want in (('NVIDIA H100 80GB HBM3', 'bfloat16', 989e12), ('NVIDIA A100-SXM4-40GB', 'bfloat16', 312e12),
                              ('NVIDIA A10', 'float16', 125e12), ('NVIDIA H200', torch.bfloat16, 989e12)):
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a, n=name: n)
        flops, label = peak_flops('cuda', dtype)
        assert flops == want and name in label
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'NVIDIA A100-SXM4-40GB')
    monkeypatch.setattr(torch, 'get_float32_matmul_precision', lambda: 'highest')
    assert peak_flops('cuda', 'float32') == (19.5e12, 'NVIDIA A100-SXM4-40GB float32 datasheet peak')
    monkeypatch.setattr(torch, 'get_float32_matmul_precision', lambda: 'high')
    assert peak_flops('cuda', 'float32') == (156e12, 'NVIDIA A100-SXM4-40GB float32 (tf32) datasheet peak')
