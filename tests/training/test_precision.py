"""``training.precision``: ``auto`` takes bf16 only where the hardware computes it."""

from __future__ import annotations

import pytest
import torch

from medsynth_fl.training import precision as prec


def test_cpuinfo_flags_decide_native_bf16(tmp_path):
    zen3 = tmp_path / "zen3"
    zen3.write_text("flags\t\t: fpu sse2 avx avx2 fma\n")
    sapphire = tmp_path / "spr"
    sapphire.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert not prec.cpu_has_bf16_units(zen3)
    assert prec.cpu_has_bf16_units(sapphire)
    assert not prec.cpu_has_bf16_units(tmp_path / "missing")  # not Linux: fp32


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu(monkeypatch, native):
    monkeypatch.setattr(prec, "cpu_has_bf16_units", lambda: native)
    assert prec.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    # an explicit setting is kept whatever the hardware
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cpu") == "bf16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        prec.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'auto'"):
        prec.autocast("cpu", "auto")  # autocast needs the resolved value


def test_bf16_autocast_runs_a_bf16_matmul():
    a = torch.randn(4, 4)
    with prec.autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with prec.autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32
