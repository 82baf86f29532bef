#!/usr/bin/env python3
"""Checks search, ingest and delete of a running `diptych serve` that holds phantom slices.

Run by service/tests/search_e2e.rs after it ingested a folder of phantom DICOM files with
`diptych ingest`; the folder's `truth.json` says what each instance is (subject, twin or not,
lesion cells on the 16x16 grid). Stubs come from proto/ through grpcio-tools, as in
client_check.py. Prints one JSON line of measured facts; exits non-zero with the failed check.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
from client_check import CHECKS, check, expect_error, generate_stubs, run_checks  # noqa: E402


def lesion_overlap(a, b):
    """Intersection over union of two sets of lesion grid cells."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--proto-dir", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="the ingested folder with truth.json")
    ap.add_argument("--extra", required=True, type=Path, help="a DICOM file not yet ingested")
    args = ap.parse_args()

    truth = json.loads((args.data / "truth.json").read_text())
    by_uid = {t["sop"]: t for t in truth}
    with tempfile.TemporaryDirectory() as stubs:
        pb = generate_stubs(args.proto_dir, Path(stubs))
        common, search, ingest, info, images = pb["common"], pb["search"], pb["ingest"], pb["info"], pb["images"]
        channel = grpc.insecure_channel(args.addr, options=[("grpc.max_receive_message_length", 64 << 20)])
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["diptych.v1.SearchService", "diptych.v1.IngestService", ""]:
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            check(status == health_pb2.HealthCheckResponse.SERVING, f"health of {service or 'the server'} is SERVING")
        stub = pb["search_grpc"].SearchServiceStub(channel)
        ingest_stub = pb["ingest_grpc"].IngestServiceStub(channel)
        info_stub = pb["info_grpc"].InfoServiceStub(channel)
        image_stub = pb["images_grpc"].ImageServiceStub(channel)

        # Ingest acknowledges durable instances; encoding and indexing follow. Wait for them.
        deadline = time.perf_counter() + 120
        while True:
            stats = info_stub.GetIndexStats(info.GetIndexStatsRequest())
            if stats.pending == 0 or time.perf_counter() > deadline:
                break
            time.sleep(0.2)
        check(stats.pending == 0, f"every acknowledged instance is indexed ({stats.pending} pending)")
        check(stats.records == len(truth), f"the index holds every ingested slice ({stats.records} of {len(truth)})")
        check(stats.studies == len({t['study'] for t in truth}), f"distinct studies counted ({stats.studies})")
        check(stats.code_bytes > 0 and stats.catalog_bytes > 0, "stored code and catalog bytes are reported")
        caps = info_stub.GetCapabilities(info.GetCapabilitiesRequest())
        fields = {f.name for f in caps.filter_fields}
        check({"modality", "study_date", "abnormality", "patient_id"} <= fields, f"capabilities list filter fields: {sorted(fields)}")
        check(caps.exact_search and caps.max_top_k == 1000, "capabilities say search is exact, top-k up to 1000")

        def file_input(uid):
            return common.ImageInput(dicom=(args.data / by_uid[uid]["file"]).read_bytes())

        def run(query, mode, **kw):
            return stub.Search(search.SearchRequest(query=query, mode=mode, **kw))

        NORMAL, ABNORMAL, COMBINED = common.SEARCH_MODE_NORMAL, common.SEARCH_MODE_ABNORMAL, common.SEARCH_MODE_COMBINED
        diseased = [t for t in truth if not t["twin"] and t["lesion"] and t["twin_sop"]][:24]
        check(len(diseased) >= 8, f"the data holds diseased slices ({len(diseased)})")

        # Normal mode: the healthy twin of a diseased slice ranks first among other subjects' slices.
        twin_first, twin_ranks = 0, []
        for q in diseased:
            answer = run(search.Query(image=file_input(q["sop"])), NORMAL, top_k=20, filter=f'body_part:BRAIN AND NOT patient_id:"{q["patient"]}"')
            uids = [h.slice.sop_instance_uid for h in answer.hits]
            check(all(by_uid[u]["patient"] != q["patient"] for u in uids), "the filter kept the query's subject out")
            rank = uids.index(q["twin_sop"]) + 1 if q["twin_sop"] in uids else 99
            twin_ranks.append(rank)
            twin_first += rank == 1
        twin_rate = twin_first / len(diseased)
        check(twin_rate >= 0.8, f"normal mode ranks the healthy twin first for {twin_rate:.0%} of diseased queries (ranks {twin_ranks})")

        # Abnormal mode: hits' lesions overlap the query's more than other lesions do.
        top_overlap, base_overlap = [], []
        for q in diseased:
            others = [t for t in truth if t["lesion"] and t["patient"] != q["patient"]]
            base_overlap += [lesion_overlap(q["lesion"], t["lesion"]) for t in others]
            answer = run(search.Query(image=file_input(q["sop"])), ABNORMAL, top_k=5, filter=f'NOT patient_id:"{q["patient"]}" AND body_part:BRAIN')
            top_overlap += [lesion_overlap(q["lesion"], by_uid[h.slice.sop_instance_uid]["lesion"]) for h in answer.hits]
        mean_top = sum(top_overlap) / len(top_overlap)
        mean_base = sum(base_overlap) / len(base_overlap)
        check(mean_top > mean_base, f"abnormal mode prefers overlapping lesions: top-5 IoU {mean_top:.3f} vs {mean_base:.3f} for any lesion")

        # Distances and modes agree with each other.
        q = diseased[0]
        indexed = search.Query(indexed=common.SliceRef(sop_instance_uid=q["sop"]))
        by_mode = {m: run(indexed, m, top_k=10) for m in (NORMAL, ABNORMAL, COMBINED)}
        for m, answer in by_mode.items():
            check(answer.exact and answer.hits[0].distance <= answer.hits[-1].distance, f"mode {m}: exact, sorted by distance")
            check([h.rank for h in answer.hits] == list(range(1, 11)), f"mode {m}: ranks 1..10")
        check(by_mode[COMBINED].hits[0].slice.sop_instance_uid == q["sop"] and by_mode[COMBINED].hits[0].distance == 0, "an indexed slice finds itself first at distance 0")
        for h in by_mode[COMBINED].hits:
            check(abs(h.distance - (h.normal_distance + h.abnormal_distance)) < 1e-3 * max(1, h.distance), "combined = normal + abnormal")
        weighted = run(indexed, COMBINED, top_k=10, normal_weight=0.25, abnormal_weight=2.0)
        for h in weighted.hits:
            check(abs(h.distance - (0.25 * h.normal_distance + 2.0 * h.abnormal_distance)) < 1e-3 * max(1, h.distance), "weights apply")
        excluded = run(indexed, COMBINED, top_k=10, exclude_query=True)
        check(q["sop"] not in [h.slice.sop_instance_uid for h in excluded.hits], "exclude_query leaves the query slice out")

        # Raw codes from Encode give the same answer as the image they came from.
        codes = image_stub.Encode(images.EncodeRequest(image=file_input(q["sop"]))).codes
        from_codes = run(search.Query(codes=codes), COMBINED, top_k=10)
        from_image = run(search.Query(image=file_input(q["sop"])), COMBINED, top_k=10)
        check([h.slice.sop_instance_uid for h in from_codes.hits] == [h.slice.sop_instance_uid for h in from_image.hits], "codes and image queries agree")

        # Composite: anatomy of a healthy slice with the lesion of a diseased one.
        healthy = next(t for t in truth if not t["lesion"] and not t["twin"] and t["patient"] != q["patient"])
        composite = search.Query(
            composite=search.CompositeQuery(
                normal_from=search.CodeSource(indexed=common.SliceRef(sop_instance_uid=healthy["sop"])),
                abnormal_from=search.CodeSource(image=file_input(q["sop"])),
            )
        )
        comp = run(composite, COMBINED, top_k=5)
        anatomy_only = run(search.Query(indexed=common.SliceRef(sop_instance_uid=healthy["sop"])), NORMAL, top_k=len(truth))
        lesion_only = run(search.Query(image=file_input(q["sop"])), ABNORMAL, top_k=5)
        d_normal = {h.slice.sop_instance_uid: h.distance for h in anatomy_only.hits}
        lesion_share = lambda hits: sum(bool(by_uid[h.slice.sop_instance_uid]["lesion"]) for h in hits) / len(hits)
        mean_anatomy = lambda hits: sum(d_normal[h.slice.sop_instance_uid] for h in hits) / len(hits)
        check(lesion_share(comp.hits) > lesion_share(anatomy_only.hits[:5]), f"composite: more lesions ({lesion_share(comp.hits):.0%}) than anatomy alone finds ({lesion_share(anatomy_only.hits[:5]):.0%})")
        check(mean_anatomy(comp.hits) < mean_anatomy(lesion_only.hits), f"composite: anatomy closer to A ({mean_anatomy(comp.hits):.1f}) than the lesion query alone gives ({mean_anatomy(lesion_only.hits):.1f})")
        check(all(abs(h.distance - h.normal_distance - h.abnormal_distance) < 1e-3 * max(1, h.distance) for h in comp.hits), "composite distances are d_n(A) + d_a(B)")

        # Filters apply before ranking.
        mr = run(indexed, COMBINED, top_k=50, filter="modality:MR AND study_date:[20190101 TO 20191231]")
        check(mr.hits and all(h.metadata.modality == "MR" and "20190101" <= h.metadata.study_date <= "20191231" for h in mr.hits), "date range and modality filter")
        check(mr.records_matched == sum(1 for t in truth if t["study_date"].startswith("2019")), f"records_matched counts the filter ({mr.records_matched})")
        abnormal = run(indexed, COMBINED, top_k=50, filter="abnormality:>0.5")
        check(all(h.metadata.abnormality > 0.5 for h in abnormal.hits), "abnormality:>0.5 keeps abnormal slices only")
        expect_error(lambda: run(indexed, COMBINED, filter="modality:(MR"), grpc.StatusCode.INVALID_ARGUMENT, "filter", "a malformed filter")
        expect_error(lambda: run(indexed, COMBINED, filter="colour:red"), grpc.StatusCode.INVALID_ARGUMENT, "colour", "an unknown filter field")

        # Grouping.
        studies = run(indexed, COMBINED, top_k=5, grouping=common.GROUPING_STUDY)
        study_uids = [h.study_instance_uid for h in studies.hits]
        check(len(set(study_uids)) == len(study_uids), "grouping by study gives distinct studies")
        check(all(h.group_slices >= 1 for h in studies.hits), "groups say how many slices matched")
        mean3 = run(indexed, COMBINED, top_k=5, grouping=common.GROUPING_STUDY, group_score=common.GROUP_SCORE_MEAN_OF_BEST_N, group_best_n=3)
        best = {h.study_instance_uid: h.distance for h in run(indexed, COMBINED, top_k=100, grouping=common.GROUPING_STUDY).hits}
        check(all(h.distance >= best[h.study_instance_uid] - 1e-6 for h in mean3.hits), "a study's mean of best 3 is never below its best slice")
        series = run(indexed, COMBINED, top_k=5, grouping=common.GROUPING_SERIES)
        check(len({h.series_instance_uid for h in series.hits}) == len(series.hits), "grouping by series gives distinct series")

        # Thumbnails are decoded from the stored codes.
        thumbs = run(indexed, COMBINED, top_k=2, include_thumbnails=True)
        check(all(h.thumbnail.png[:4] == b"\x89PNG" and h.normal_appearing.png[:4] == b"\x89PNG" for h in thumbs.hits), "thumbnails are PNGs")

        # Bad requests name the field.
        invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
        expect_error(lambda: run(indexed, COMBINED, top_k=5000), invalid, "top_k", "top_k beyond 1000")
        expect_error(lambda: run(indexed, 0), invalid, "mode", "no mode")
        expect_error(lambda: run(search.Query(indexed=common.SliceRef(sop_instance_uid="9.9.9")), COMBINED), not_found, "query.indexed", "an unknown UID")
        bad_codes = common.SliceCodes(normal=common.Code(grid_rows=2, grid_columns=2, indices=[1, 2, 3, 4]), abnormal=codes.abnormal)
        expect_error(lambda: run(search.Query(codes=bad_codes), COMBINED), invalid, "query.codes.normal", "codes of the wrong grid")
        other_model = common.SliceCodes(normal=codes.normal, abnormal=codes.abnormal, model_id="another-model")
        expect_error(lambda: run(search.Query(codes=other_model), COMBINED), invalid, "model_id", "codes of another model")
        expect_error(lambda: run(indexed, COMBINED, top_k=5, exclude_query=False, normal_weight=-1.0), invalid, "weight", "a negative weight")

        # Ingest from Python: a new instance becomes searchable; duplicates and garbage are reported.
        extra = args.extra.read_bytes()
        started = time.perf_counter()
        answer = ingest_stub.Ingest(iter([
            ingest.IngestRequest(dicom=extra, client_ref="extra.dcm"),
            ingest.IngestRequest(dicom=extra, client_ref="again.dcm"),
            ingest.IngestRequest(dicom=b"not dicom at all", client_ref="garbage.bin"),
            ingest.IngestRequest(dicom=(args.data / truth[0]["file"]).read_bytes(), client_ref="old.dcm"),
        ]))
        check(answer.accepted == 1 and answer.slices == 1, f"one new instance accepted ({answer})")
        check(answer.duplicates == 2, "the repeated and the already-indexed instance are duplicates")
        check(len(answer.failures) == 1 and answer.failures[0].client_ref == "garbage.bin" and answer.failures[0].position == 2, "the garbage is refused by position and name")
        check(len(answer.failures[0].reason) > 10, f"with a reason: {answer.failures[0].reason}")
        extra_uid = None
        deadline = time.perf_counter() + 30
        found_after = None
        while time.perf_counter() < deadline:
            hits = run(search.Query(image=common.ImageInput(dicom=extra)), COMBINED, top_k=1).hits
            if hits and hits[0].distance == 0 and hits[0].slice.sop_instance_uid not in by_uid:
                found_after = time.perf_counter() - started
                extra_uid = hits[0].slice.sop_instance_uid
                break
            time.sleep(0.05)
        check(found_after is not None, "the newly ingested instance became searchable")

        # Delete a study: every record goes, durably; a second delete finds nothing.
        victim = truth[-1]
        count = sum(1 for t in truth if t["study"] == victim["study"])
        deleted = ingest_stub.Delete(ingest.DeleteRequest(target=common.DicomRef(study_instance_uid=victim["study"])))
        check(deleted.records_deleted == count, f"delete removed the study's {count} records ({deleted.records_deleted})")
        expect_error(lambda: run(search.Query(indexed=common.SliceRef(sop_instance_uid=victim["sop"])), COMBINED), not_found, "query.indexed", "a deleted slice")
        after = run(search.Query(image=file_input(victim["sop"])), COMBINED, top_k=100)
        check(all(h.study_instance_uid != victim["study"] for h in after.hits), "no hit comes from the deleted study")
        expect_error(lambda: ingest_stub.Delete(ingest.DeleteRequest(target=common.DicomRef(study_instance_uid=victim["study"]))), not_found, "target", "deleting twice")
        expect_error(lambda: ingest_stub.Delete(ingest.DeleteRequest()), invalid, "target", "a delete without target")
        stats2 = info_stub.GetIndexStats(info.GetIndexStatsRequest())
        check(stats2.records == len(truth) + 1 - count, f"stats follow ingest and delete ({stats2.records})")

        print(json.dumps({
            "checks": len(CHECKS),
            "twin_first_rate": round(twin_rate, 3),
            "lesion_iou_top5": round(mean_top, 3),
            "lesion_iou_any": round(mean_base, 3),
            "searchable_after_s": round(found_after, 3),
            "deleted_study": victim["study"],
            "deleted_records": count,
            "extra_sop": extra_uid,
            "records_after": stats2.records,
        }))


if __name__ == "__main__":
    run_checks(main)
