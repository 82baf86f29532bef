"""Writes an int8 copy of a bundle's encoder graph for `diptych quantize` (docs/QUANTIZATION.md).

Two steps, both on the ONNX graph:

1. The score head's last stage is rewritten exactly in float. It upsamples a 64x64 map by 2
   (nearest neighbour), runs a 3x3 convolution and ReLU at 128x128, a 1x1 head to the label
   logits and an ArgMax over the labels. A 3x3 convolution of a nearest-neighbour upsampling is
   four 2x2 convolutions of the map before it, one per output phase (row and column parity):
   each phase sees two source rows and columns, the kernel's taps that land on the same source
   pixel summed. The four phases are computed at 64x64 (16/36 of the multiply-adds), each gets
   its ReLU and the head, the ArgMax runs per phase, and the four label maps are interleaved
   back into the full-size map (a reshape and a transpose), so every consumer of the labels —
   the lesion share of the score, and the lesion mask that nulls healthy cells' abnormal codes
   (`null_outside_lesion`) — sees the same map as before.
2. ONNX Runtime's static quantisation (QDQ format): convolution weights int8 per output
   channel, their inputs uint8 with one scale per tensor, ranges calibrated on the slices given.
   Only convolutions are quantised, and not those named by --keep-float; by default every
   convolution before the vector quantisation stays float (the codes are then the float
   graph's, bit for bit) and the score head's decoder runs in int8. The vector quantisation
   (distances to the codebooks, ArgMin) is never quantised.

`diptych quantize` then checks the result against the float graph through the service's own
encoder and refuses it below the agreement it asks for.

Usage: quantize_encoder.py --model DIR --inputs FILE --count N --size S --out FILE
       [--keep-float NAME ...]   (inputs: raw little-endian float32, N*S*S values)
Prints one JSON line: {"rewritten_phases": 4, "quantized": [...], "kept_float": [...]}.
"""

import argparse
import json
import os
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

# Source rows (offsets -1, 0, +1 of the low-resolution map) that each 3x3 tap reads for an
# output of even (phase 0) or odd (phase 1) row: [phase][source offset][tap].
PHASE_TAPS = [
    np.array([[1, 0, 0], [0, 1, 1]], np.float32),  # even: taps 0 -> row -1, taps 1, 2 -> row 0
    np.array([[1, 1, 0], [0, 0, 1]], np.float32),  # odd: taps 0, 1 -> row 0, tap 2 -> row +1
]


class Slices(CalibrationDataReader):
    """Feeds the calibration slices to the quantiser in batches of 16."""

    def __init__(self, x: np.ndarray, name: str) -> None:
        self.x, self.name, self.i = x, name, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        batch = self.x[self.i : self.i + 16]
        self.i += 16
        return {self.name: batch}


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def rewrite_score_stage(model: onnx.ModelProto, size: int) -> int:
    """Replaces Resize(x2, nearest) -> Conv 3x3 -> Relu -> Conv 1x1 -> ArgMax(axis 1) at the
    full input size `size` by its four-phase form; returns the number of phases written (0 when
    the pattern is absent)."""
    g = model.graph
    init = {i.name: i for i in g.initializer}
    consumers = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def only_consumer(node, op):
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == op:
            return users[0]
        return None

    for resize in [n for n in g.node if n.op_type == "Resize"]:
        if attr(resize, "mode", b"nearest") != b"nearest":
            continue
        conv = only_consumer(resize, "Conv")
        relu = conv and only_consumer(conv, "Relu")
        head = relu and only_consumer(relu, "Conv")
        argmax = head and only_consumer(head, "ArgMax")
        if argmax is None or attr(argmax, "axis", 0) != 1:
            continue
        w = numpy_helper.to_array(init[conv.input[1]])
        if w.shape[2:] != (3, 3) or list(attr(conv, "pads", [0] * 4)) != [1, 1, 1, 1]:
            continue
        bias = conv.input[2] if len(conv.input) > 2 else ""
        if attr(argmax, "keepdims", 1):
            raise SystemExit("the score's ArgMax keeps its axis; this rewrite expects keepdims=0")
        new, labels = [], []
        for a in (0, 1):
            for b in (0, 1):
                kernel = np.einsum("ik,ockl,jl->ocij", PHASE_TAPS[a], w, PHASE_TAPS[b])
                tag = f"score_phase{a}{b}"
                g.initializer.append(numpy_helper.from_array(kernel.astype(np.float32), f"{tag}.weight"))
                # Even phases read rows -1 and 0 (pad before), odd ones rows 0 and +1 (after).
                pads = [1 - a, 1 - b, a, b]
                inputs = [resize.input[0], f"{tag}.weight"] + ([bias] if bias else [])
                new.append(helper.make_node("Conv", inputs, [f"{tag}.conv"], name=f"{tag}.conv", kernel_shape=[2, 2], pads=pads))
                new.append(helper.make_node("Relu", [f"{tag}.conv"], [f"{tag}.relu"], name=f"{tag}.relu"))
                new.append(helper.make_node("Conv", [f"{tag}.relu"] + list(head.input[1:]), [f"{tag}.logits"], name=f"{tag}.head", kernel_shape=[1, 1]))
                new.append(helper.make_node("ArgMax", [f"{tag}.logits"], [f"{tag}.labels"], name=f"{tag}.argmax", axis=1, keepdims=1))
                labels.append(f"{tag}.labels")
        # Phase (a, b) holds the labels of full-size pixels (2i + a, 2j + b): concatenated in
        # that order, [N, 4, h, w] -> [N, a, b, h, w] -> [N, h, a, w, b] -> [N, 2h, 2w].
        half = size // 2
        g.initializer.append(numpy_helper.from_array(np.array([-1, 2, 2, half, half], np.int64), "score_phases.split"))
        g.initializer.append(numpy_helper.from_array(np.array([-1, size, size], np.int64), "score_phases.full"))
        new.append(helper.make_node("Concat", labels, ["score_phases.stacked"], name="score_phases.concat", axis=1))
        new.append(helper.make_node("Reshape", ["score_phases.stacked", "score_phases.split"], ["score_phases.split_out"], name="score_phases.reshape_split"))
        new.append(helper.make_node("Transpose", ["score_phases.split_out"], ["score_phases.interleaved"], name="score_phases.interleave", perm=[0, 3, 1, 4, 2]))
        new.append(helper.make_node("Reshape", ["score_phases.interleaved", "score_phases.full"], [argmax.output[0]], name="score_phases.reshape_full"))
        gone = {id(n) for n in (resize, conv, relu, head, argmax)}
        nodes = []
        for n in g.node:
            if id(n) == id(resize):
                nodes.extend(new)
            elif id(n) not in gone:
                nodes.append(n)
        del g.node[:]
        g.node.extend(nodes)
        used = {i for n in g.node for i in n.input}
        keep = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
        del g.value_info[:]
        return 4
    return 0


def check_rewrite(source: str, rewritten: onnx.ModelProto, x: np.ndarray) -> None:
    """Both float graphs give the same outputs on `x`, or the tool stops."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    before = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(rewritten.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = before.get_inputs()[0].name
    for out, a, b in zip(before.get_outputs(), before.run(None, {name: x}), after.run(None, {name: x})):
        gap = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        if gap > 1e-4:
            raise SystemExit(f"the rewritten score stage changes output {out.name} by {gap}; not writing it")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep-float", nargs="*", default=None, help="convolutions to keep in float")
    args = ap.parse_args()

    source = os.path.join(args.model, "encoder.onnx")
    model = onnx.load(source)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if args.keep_float is None:
        # Every convolution before the vector quantisation (the exporter names their weights
        # "encoder.*"): int8 there moves the latents across code boundaries.
        keep = {n.name for n in convs if n.input[1].startswith("encoder.")}
    else:
        keep = set(args.keep_float)
        unknown = keep - {n.name for n in convs}
        if unknown:
            raise SystemExit(f"--keep-float names no convolution of {source}: {sorted(unknown)}")
    phases = rewrite_score_stage(model, args.size)
    onnx.checker.check_model(model)
    x = np.fromfile(args.inputs, dtype="<f4").reshape(args.count, 1, args.size, args.size)
    check_rewrite(source, model, x[:64])
    quantized = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in keep]
    with tempfile.TemporaryDirectory() as tmp:
        rewritten = os.path.join(tmp, "encoder.rewritten.onnx")
        onnx.save(model, rewritten)
        quantize_static(
            rewritten,
            args.out,
            Slices(x, model.graph.input[0].name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_quantize=quantized,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    print(json.dumps({"rewritten_phases": phases, "quantized": quantized, "kept_float": sorted(keep)}))


if __name__ == "__main__":
    main()
