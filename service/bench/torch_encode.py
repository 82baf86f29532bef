"""PyTorch eager baseline of `diptych bench encode`, kept running so that the benchmark can
alternate it with ONNX Runtime within one run.

Runs the same encoder weights as the service (models/<id>/encoder.onnx, converted op by op into
a torch.nn.Module by onnx2torch: every Conv, LeakyReLU, MatMul, ArgMin ... becomes the eager
PyTorch operator) on the same pre-processed slices, with the same number of threads.

Protocol (one JSON object per line on stdout): first
{"threads": T, "index_agreement": a} once the model is loaded (a: share of the normal indices
equal to ONNX Runtime's, when --codes is given); then, for every line "BATCH SECONDS" read on
stdin, {"batch": BATCH, "slices_per_s": r} measured over SECONDS; it ends at end of input.

Usage: torch_encode.py --model DIR --inputs FILE --count N --size S --threads T [--codes FILE]
       (inputs: raw little-endian float32, N*S*S values; codes: int64 normal indices)
"""

import argparse
import json
import sys
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
    ap.add_argument("--codes", help="normal indices from ONNX Runtime (int64 raw) to compare")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    net = convert(onnx.load(f"{args.model}/encoder.onnx")).eval()
    x = np.fromfile(args.inputs, dtype="<f4").reshape(args.count, 1, args.size, args.size)
    x = torch.from_numpy(x)

    with torch.inference_mode():
        # Same answers as ONNX Runtime? (normal indices, first output)
        normal = torch.cat([net(x[i : i + 32])[0] for i in range(0, args.count, 32)])
        hello = {"threads": args.threads}
        if args.codes:
            ort = np.fromfile(args.codes, dtype="<i8").reshape(normal.shape)
            hello["index_agreement"] = float((normal.numpy() == ort).mean())
        print(json.dumps(hello), flush=True)
        for line in sys.stdin:
            batch, seconds = int(line.split()[0]), float(line.split()[1])
            net(x[:batch])  # warm-up
            done, start, i = 0, time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                lo = i % (args.count - batch + 1)
                net(x[lo : lo + batch])
                done += batch
                i += batch
            rate = done / (time.perf_counter() - start)
            print(json.dumps({"batch": batch, "slices_per_s": rate}), flush=True)


if __name__ == "__main__":
    main()
