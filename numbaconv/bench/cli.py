"""``python -m numbaconv.bench``: the command line over :func:`run`.

Exits 1 when a layer's output differs from the reference beyond tolerance, so that a
script or CI can rely on the exit status.
"""
from __future__ import annotations

import argparse
import json
import sys

from .report import clean_json, format_table
from .runner import run
from .suite import BY_ID, QUICK_SHAPES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m numbaconv.bench",
        description="Time numbaconv.conv3d against torch.nn.functional.conv3d.")
    parser.add_argument("--json", action="store_true",
                        help="print the result as one line of JSON (and no progress bar)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for numba, torch and BLAS (default: numba's default)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--shapes", default=None,
                        help=f"comma-separated ids from: {','.join(BY_ID)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed pairs per layer (default: adaptive, ~1 s and >= 5)")
    parser.add_argument("--backward", action="store_true",
                        help="time the input and weight gradients instead of the forward pass")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {','.join(QUICK_SHAPES)}, fewer repeats")
    parser.add_argument("--decoder", action="store_true",
                        help="time a U-Net's transposed, strided and bottleneck layers and a "
                             "whole small U-Net, forward and backward (needs torch)")
    parser.add_argument("--ndimage", action="store_true",
                        help="time numbaconv.ndimage's filters against scipy.ndimage on "
                             "128^3 and 256^3 volumes, float32 and uint16")
    parser.add_argument("--cold", action="store_true",
                        help="time each kind of layer's first calls in a fresh process with "
                             "an empty numba cache (what a new user waits for)")
    args = parser.parse_args(argv)
    if args.cold:
        from .cold import main as cold_main
        return cold_main()
    if args.ndimage:
        from .ndimage import main as ndimage_main
        return ndimage_main()
    if args.decoder:
        from .decoder import main as decoder_main
        return decoder_main()
    try:
        result = run(shapes=args.shapes, dtype=args.dtype, threads=args.threads,
                     repeats=args.repeats, quick=args.quick, progress=not args.json,
                     backward=args.backward)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        # One line, so that the last line of the output is the whole document.
        print(json.dumps(clean_json(result), allow_nan=False))
    else:
        print(format_table(result))
    if not result["summary"]["all_ok"]:
        print("numbaconv's output differs from the reference beyond tolerance", file=sys.stderr)
        return 1
    return 0
