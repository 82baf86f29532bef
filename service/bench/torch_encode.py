"""PyTorch eager baseline of `diptych bench encode`.

Runs the same encoder weights as the service (models/<id>/encoder.onnx, converted op by op into
a torch.nn.Module by onnx2torch: every Conv, LeakyReLU, MatMul, ArgMin ... becomes the eager
PyTorch operator) on the same pre-processed slices, with the same number of threads, and prints
one JSON object: {"batch": {"1": slices_per_s, "32": slices_per_s}, "max_abs_index_mismatch": n}.

Usage: torch_encode.py --model DIR --inputs FILE --count N --size S --threads T --batches 1,32
       [--seconds 3] [--codes FILE]  (FILE: raw little-endian float32, N*S*S values)
"""

import argparse
import json
import time

import numpy as np
import onnx
import torch
from onnx2torch import convert


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--codes", help="normal indices from ONNX Runtime (int64 raw) to compare")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    net = convert(onnx.load(f"{args.model}/encoder.onnx")).eval()
    x = np.fromfile(args.inputs, dtype="<f4").reshape(args.count, 1, args.size, args.size)
    x = torch.from_numpy(x)

    result = {"threads": args.threads, "batch": {}}
    with torch.inference_mode():
        # Same answers as ONNX Runtime? (normal indices, first output)
        normal = torch.cat([net(x[i : i + 32])[0] for i in range(0, args.count, 32)])
        if args.codes:
            ort = np.fromfile(args.codes, dtype="<i8").reshape(normal.shape)
            result["index_agreement"] = float((normal.numpy() == ort).mean())
        for batch in [int(b) for b in args.batches.split(",")]:
            net(x[:batch])  # warm-up
            done, start, i = 0, time.perf_counter(), 0
            while time.perf_counter() - start < args.seconds:
                lo = i % (args.count - batch + 1)
                net(x[lo : lo + batch])
                done += batch
                i += batch
            result["batch"][str(batch)] = done / (time.perf_counter() - start)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
