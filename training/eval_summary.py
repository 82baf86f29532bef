"""Merges the JSON lines of `make eval` into its one last line.

Arguments: the outputs of `diptych-train eval --source phantom`, `... --source anatomy` and
`diptych eval` (each ending with a JSON line). The model figures of #2 are prefixed with their
source (`phantom_`, `anatomy_`); the retrieval figures keep their names.
"""

import json
import sys

MODEL_KEYS = ("whole_tumor_dice", "abnormality_auc", "twin_ssim_in_lesion", "recon_ssim")


def last_json(path):
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"{path}: no JSON line; did the evaluation fail?")
    return json.loads(lines[-1])


def main():
    phantom, anatomy, retrieval = (last_json(p) for p in sys.argv[1:4])
    out = {"model_id": phantom["model_id"]}
    for prefix, report in (("phantom", phantom), ("anatomy", anatomy)):
        for key in MODEL_KEYS:
            out[f"{prefix}_{key}"] = report[key]
        out[f"{prefix}_abnormality_healthy_p50"] = (report["abnormality_healthy_percentiles"] or [None] * 3)[1]
    for key, value in retrieval.items():
        if not isinstance(value, (dict, list)):
            out.setdefault(key, value)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
