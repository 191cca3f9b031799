"""The result of ``run()`` as a text table (quoted by the README) or as strict JSON."""
from __future__ import annotations

import math


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "gflop":
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"
    if kind == "rate":
        return f"{value:.1f}"
    if kind == "pct":
        return f"{value:.0f}%"
    if kind == "mib":
        return f"{round(value, 1) + 0.0:.1f}"  # no "-0.0"
    if kind == "diff":
        return f"{value:.1e}"
    return str(value)


_COLUMNS = (  # header, key, kind, left-aligned
    ("id", "id", "str", True),
    ("layer", "name", "str", True),
    ("GFLOP", "gflop", "gflop", False),
    ("torch ms", "torch_ms", "ms", False),
    ("nc ms", "numbaconv_ms", "ms", False),
    ("speedup", "speedup", "x", False),
    ("nc GFLOP/s", "numbaconv_gflops", "rate", False),
    ("%peak", "pct_of_peak", "pct", False),
    ("algorithm", "algorithm", "str", True),
    ("nc MiB", "workspace_mib", "mib", False),
    ("torch MiB", "torch_workspace_mib", "mib", False),
    ("rel diff", "rel_diff", "diff", False),
    ("reps", "reps", "str", False),
)


def format_table(result: dict) -> str:
    """The result of :func:`run` as an aligned text table with a summary."""
    cells = [[h for h, *_ in _COLUMNS]]
    for row in result["results"]:
        line = [_fmt(row[key], kind) for _, key, kind, _ in _COLUMNS]
        if not row["ok"]:
            line[-2] += " !"
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(_COLUMNS))]

    def render(r):
        return "  ".join(c.ljust(wd) if left else c.rjust(wd)
                         for c, wd, (_, _, _, left) in zip(r, widths, _COLUMNS)).rstrip()

    lines = [render(cells[0]), "  ".join("-" * wd for wd in widths)]
    lines += [render(r) for r in cells[1:]]
    return "\n".join(lines + [""] + _summary_lines(result))


def _summary_lines(result: dict) -> list:
    s, peak, comp, m = result["summary"], result["gemm_peak"], result["compile"], result["machine"]
    lines = []
    if result["torch_version"] is None:
        lines.append("torch not installed: numbaconv timed alone; checked at sampled "
                     "positions against the float64 reference")
    else:
        lines.append(f"geometric-mean speedup (torch ms / numbaconv ms): "
                     f"{_fmt(s['geomean_speedup'], 'x')}; min {_fmt(s['min_speedup'], 'x')} "
                     f"({s['min_speedup_shape']})")
    lines.append(f"gemm peak: {peak['gflops']:.1f} GFLOP/s ({peak['backend']} "
                 f"{peak['n']}x{peak['n']} {peak['dtype']}, median {peak['ms']:.1f} ms; "
                 f"the better of {peak['before_ms']:.1f} ms before and "
                 f"{peak['after_ms']:.1f} ms after the suite)")
    blas = ", ".join(dict.fromkeys(f"{b['prefix']} {b['num_threads']}" for b in result["blas"]
                                   if b["user_api"] == "blas")) or "none found"
    lines.append(f"threads: {result['threads']} (numba), {result['torch_threads']} (torch); "
                 f"BLAS threads: {blas}; numba threading layer: {result['threading_layer']}")
    machine = " / ".join(str(v) for v in (m["model"], m["processor"], m["cpu_name"]) if v)
    lines.append(f"dtype: {result['dtype']}; machine: {machine}; date: {result['date']}")
    t = m.get("target")
    if t:
        caches = ", ".join(f"{name} {t[key] // 1024} KiB" for name, key in
                           (("L1d", "l1d_bytes"), ("L2", "l2_bytes")) if t.get(key))
        blocks = t["blocks"].get(result["dtype"], {})
        lines.append(f"compiled for: {t['cpu']} ({t['isa']}, {t['vector_registers']} x "
                     f"{t['vector_bits']}-bit registers, from {t['source']}); {caches}; blocks "
                     f"{blocks.get('forward')} (dense), {blocks.get('depthwise')} (depthwise"
                     f"{', also in row pairs' if blocks.get('row_pairs') else ''}), "
                     f"{blocks.get('weight_grad')} (weight gradient)")
    lines.append(f"versions: numbaconv {result['numbaconv_version']}, numba "
                 f"{result['numba_version']}, numpy {result['numpy_version']}, torch "
                 f"{result['torch_version']}")
    lines.append(f"kernels compiled or loaded: warm-up {comp['warmup_count']} in "
                 f"{comp['warmup_seconds']:.2f} s (wall {comp['warmup_wall_seconds']:.2f} s); "
                 f"during the suite {comp['suite_count']} in {comp['suite_seconds']:.2f} s")
    lines.append("nc MiB / torch MiB: peak memory of one call beyond its input, weight and "
                 "output (VmHWM); rel diff: max |nc - ref| / max |ref|")
    if not s["all_ok"]:
        bad = [r["id"] for r in result["results"] if not r["ok"]]
        lines.append(f"MISMATCH (rel diff above tolerance) on: {', '.join(bad)}")
    return lines


def clean_json(value):
    """``value`` with non-finite floats as None, so that the JSON is strict."""
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
