"""Parses a /metrics exposition read from stdin with the Prometheus project's own parsers
(prometheus_client: the text format 0.0.4 parser, or the strict OpenMetrics 1.0 parser with
--openmetrics) and prints one JSON object: {"families": [{"name", "type", "unit", "samples":
[{"name", "labels", "value"}]}]}. Any exposition the parser refuses exits non-zero with its
message, so the Rust test that scrapes the server checks the format as well as the values."""

import argparse
import json
import math
import sys

from prometheus_client import parser as prometheus_text
from prometheus_client.openmetrics import parser as openmetrics


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--openmetrics", action="store_true", help="parse as OpenMetrics 1.0")
    args = ap.parse_args()
    text = sys.stdin.read()
    parse = (
        openmetrics.text_string_to_metric_families
        if args.openmetrics
        else prometheus_text.text_string_to_metric_families
    )
    families = []
    for family in parse(text):
        samples = []
        for sample in family.samples:
            value = sample.value
            samples.append(
                {
                    "name": sample.name,
                    "labels": dict(sample.labels),
                    # JSON has no infinity: +Inf bucket bounds stay in labels as text.
                    "value": None if math.isinf(value) or math.isnan(value) else value,
                }
            )
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "unit": getattr(family, "unit", ""),
                "samples": samples,
            }
        )
    json.dump({"families": families}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
