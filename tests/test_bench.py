"""``numbaconv.bench``: the structure of ``run()``'s result and the CLI's JSON.

No timing assertions: machines are noisy. The structure tests run with and without torch
(without it, torch's columns are None).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import numbaconv
from numbaconv import _dispatch, bench
from numbaconv.bench.layer import sampled_reference_diff
from numbaconv.bench.report import clean_json
from numbaconv.kernels.registry import FORWARD, REGISTRY
from numbaconv.reference import conv3d_reference

# Every forward kernel by its own name: which register-blocked variant serves depends on
# the CPU (blocked8x16 on AVX-512, blocked4x16 on AVX2; see numbaconv/_cpu.py).
ALGORITHM_NAMES = set(_dispatch.ALGORITHMS) | {
    name for name, kernel in REGISTRY.items() if kernel.computes == FORWARD}
ROW_KEYS = {"id", "name", "layer", "config", "out_shape", "gflop", "torch_ms", "numbaconv_ms",
            "speedup", "numbaconv_gflops", "torch_gflops", "pct_of_peak", "algorithm",
            "workspace_mib", "torch_workspace_mib", "rel_diff", "check", "tolerance", "ok",
            "reps", "compiles"}
TOP_KEYS = {"numbaconv_version", "numba_version", "numpy_version", "torch_version", "dtype",
            "threads", "torch_threads", "blas", "threading_layer", "machine", "date", "quick",
            "repeats", "compile", "gemm_peak", "results", "summary"}


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def check_structure(result, ids, repeats, with_torch):
    assert TOP_KEYS <= set(result)
    assert result["dtype"] == "float32"
    assert result["threads"] >= 1
    assert (result["torch_version"] is not None) == with_torch
    for key in ("warmup_count", "warmup_seconds", "suite_count", "suite_seconds"):
        assert result["compile"][key] >= 0
    assert result["gemm_peak"]["gflops"] > 0 and result["gemm_peak"]["ms"] > 0
    assert [r["id"] for r in result["results"]] == ids
    for row in result["results"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["gflop"] > 0
        assert row["numbaconv_ms"] > 0 and row["numbaconv_gflops"] > 0
        assert row["reps"] == repeats
        assert row["algorithm"] in ALGORITHM_NAMES
        assert row["rel_diff"] < 1e-4 and row["ok"]
        assert row["workspace_mib"] is None or isinstance(row["workspace_mib"], float)
        if with_torch:
            assert row["torch_ms"] > 0 and row["speedup"] > 0
            assert row["check"] == "torch"
        else:
            assert row["torch_ms"] is None and row["speedup"] is None
            assert row["torch_workspace_mib"] is None
    assert result["summary"]["all_ok"]
    if with_torch:
        assert result["summary"]["geomean_speedup"] > 0
        assert result["summary"]["min_speedup_shape"] in ids
    # The table renders, and the dict is strict JSON.
    table = bench.format_table(result)
    assert all(f"\n{i} " in table for i in ids)
    json.loads(json.dumps(clean_json(result), allow_nan=False))


def test_run_structure():
    result = bench.run(shapes=["a", "i"], repeats=2, progress=False)
    check_structure(result, ["a", "i"], 2, with_torch=_torch_available())


def test_run_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    result = bench.run(shapes=["a", "i"], repeats=2, progress=False)
    check_structure(result, ["a", "i"], 2, with_torch=False)
    assert result["gemm_peak"]["backend"] == "numpy matmul"
    assert all(r["check"] == "float64 sample" for r in result["results"])
    assert "torch not installed" in bench.format_table(result)


def test_run_restores_thread_counts():
    import numba

    before = numba.get_num_threads()
    bench.run(shapes="a", repeats=1, threads=1, progress=False)
    assert numba.get_num_threads() == before


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown shape"):
        bench.run(shapes=["zz"], progress=False)
    with pytest.raises(ValueError, match="dtype"):
        bench.run(shapes=["a"], dtype="float16", progress=False)
    with pytest.raises(ValueError, match="threads"):
        bench.run(shapes=["a"], threads=0, progress=False)


def test_suite_definition():
    assert [s.id for s in bench.SHAPES] == ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
                                           "k1", "k2", "l1", "l2", "l3", "m"]
    # the quick subset includes dense layers (c, l1), not only the wins
    assert set(bench.QUICK_SHAPES) == {"a", "c", "d", "g", "i", "j", "l1"}
    from numbaconv._spec import ConvSpec

    c = {s.id: s for s in bench.SHAPES}["c"]
    x = np.zeros((c.batch, c.in_channels) + c.size, np.float32)
    w = np.zeros((c.out_channels, c.in_channels) + c.kernel, np.float32)
    spec = ConvSpec.from_args(x, w, None, c.stride, c.padding, c.dilation, c.groups)[0]
    assert spec.flops == 2 * 32 * 32 * 27 * 64**3


def test_sampled_check_matches_the_full_reference():
    """The check without torch (the reference on each sampled output's receptive field)
    agrees with the full reference, padding, stride, dilation and groups included, and
    sees an error in the border planes."""
    shape = bench.Shape("t", "test", 2, 4, (5, 6, 7), 6, kernel=(3, 2, 3), stride=(2, 1, 2),
                        padding=(1, 0, 2), dilation=(1, 2, 1), groups=2)
    x, w, b = shape.inputs("float64", np.random.default_rng(0))
    full = conv3d_reference(x, w, b, **shape.args())
    assert sampled_reference_diff(x, w, b, shape, full) < 1e-14
    wrong = full.copy()
    wrong[:, :, 0] += 0.01
    assert sampled_reference_diff(x, w, b, shape, wrong) > 1e-3


def test_cli_json():
    root = os.path.dirname(os.path.dirname(os.path.abspath(numbaconv.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "numbaconv.bench", "--json", "--shapes", "a", "--repeats", "2"],
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    check_structure(result, ["a"], 2, with_torch=result["torch_version"] is not None)


def test_decoder_bench_runs_and_reports_each_layer(monkeypatch, capsys):
    pytest.importorskip("torch")
    from numbaconv.bench import decoder

    monkeypatch.setattr(decoder, "REPEATS", 1)
    monkeypatch.setattr(decoder, "TRANSPOSED", (decoder._transposed("T 8->4 k2s2 4^3", 8, 4, 4, 2),
                                                 decoder._transposed("T 8->4 k3s2p1op1 4^3", 8, 4, 4, 3, 1, 1)))
    monkeypatch.setattr(decoder, "STRIDED", (decoder.Layer("conv 4->8 k3s2p1 8^3", 4, 8, 8, 3, 2, 1),))
    monkeypatch.setattr(decoder, "BOTTLENECK", (decoder.Layer("conv 8->8 k1 4^3", 8, 8, 4, 1),))
    monkeypatch.setattr(decoder, "UNET", decoder.unet_layers(8, (2, 4)))
    assert decoder.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1:5]] == ["8->4", "8->4", "4->8", "8->8"]
    # The U-Net: input conv, one down and its conv, one up and its conv, the head; a sum.
    assert [line.split()[0] for line in lines[5:11]] == ["enc", "down", "enc", "up", "dec", "head"]
    assert lines[11].startswith("U-Net 8^3") and lines[12].startswith("U-Net forward + backward")
    for line in lines[1:11]:
        assert float(line.split("err")[1]) < 1e-5  # numbaconv's output against torch's


def test_cold_bench_runs_each_layer_in_a_fresh_process(monkeypatch, capsys):
    """--cold: one line per layer, with the figures of a fresh interpreter."""
    from numbaconv.bench import cold
    monkeypatch.setattr(cold, "LAYERS", {"pointwise 8->8 4^3": (8, 8, 4, 1, 1, "float32")})
    assert cold.main() == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("pointwise 8->8 4^3")
    imported, forward, backward, total = map(float, line.split()[-4:])
    assert 0 < imported and 0 < forward and 0 < backward and imported + forward + backward < total
