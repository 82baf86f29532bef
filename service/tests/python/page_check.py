#!/usr/bin/env python3
"""Drives diptych's page in a real browser: headless Chromium (Debian's chromium and
chromium-driver) through Selenium, against a real `diptych serve`.

Used by service/tests/web_page.rs, which wrote phantom studies with `diptych demo
write-studies`, started the server (viewer deep links to this script's "viewer" origin, which
the CORS allow-list admits) and passes the command that ingests the studies. This script:

  1. serves two other origins on loopback: ALLOWED (in grpc.web_allowed_origins; it also plays
     the viewer of the deep links) and REFUSED (not in the list), each with caller.html, a page
     that calls GetCapabilities over gRPC-Web with fetch();
  2. opens the page's Overview, runs the ingest, and sees the studies announced on Watch;
  3. drops a diseased slice on the Search view (a real drop event with the file's bytes) in
     normal mode with a filter that leaves its own patient out: the decomposition appears
     (input, x̂, x̃, segmentation, score) and the healthy twin is hit #1;
  4. Side by side: the top 5 in each mode (normal: the slice and its twin first; abnormal and
     combined: the slice itself first; the modes rank differently);
  5. Composite: the twin's anatomy with another patient's lesion;
  6. a filter that matches nothing, and a malformed one (the server's message shown);
  7. follows a hit's viewer deep link;
  8. the cross-origin pages: ALLOWED reads the answer, REFUSED is blocked by the browser.

Screenshots go to --screenshots. Exits 0 when every check passes and prints one JSON line.
"""

import argparse
import base64
import functools
import http.server
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as missing:  # pragma: no cover - environment problem, not a test failure
    sys.exit(f"missing Python package ({missing}); create the venv with `make deps-py`")

CHECKS = []
FACTS = {}

CALLER_HTML = """<!doctype html><meta charset="utf-8"><title>caller</title>
<p id="result">calling…</p>
<script>
// A viewer extension's call: GetCapabilities over gRPC-Web (an empty message, framed).
const grpc = new URLSearchParams(location.search).get("grpc");
fetch(grpc + "/diptych.v1.InfoService/GetCapabilities", {
  method: "POST",
  headers: {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
  body: new Uint8Array([0, 0, 0, 0, 0]),
}).then(async (r) => {
  // Frames: a flag byte, a 4-byte length, the payload; the trailers are the frame flagged 0x80.
  const bytes = new Uint8Array(await r.arrayBuffer());
  let status = r.headers.get("grpc-status"), at = 0;
  while (at + 5 <= bytes.length) {
    const length = new DataView(bytes.buffer).getUint32(at + 1);
    if (bytes[at] & 0x80) {
      const trailers = new TextDecoder().decode(bytes.subarray(at + 5, at + 5 + length));
      status = (trailers.match(/grpc-status:\s*(\d+)/) || [])[1];
    }
    at += 5 + length;
  }
  document.getElementById("result").textContent = `answered: HTTP ${r.status}, ${bytes.length} bytes, grpc-status ${status}`;
}, (e) => {
  document.getElementById("result").textContent = `refused: ${e}`;
});
</script>"""

VIEWER_HTML = """<!doctype html><meta charset="utf-8"><title>viewer</title>
<p id="study"></p>
<script>document.getElementById("study").textContent = "viewer opened study " +
  new URLSearchParams(location.search).get("study");</script>"""


def check(condition, what):
    """Records a check; raises with `what` when it fails."""
    if not condition:
        raise AssertionError(what)
    CHECKS.append(what)


def serve_origin(port: int, root: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", "--force-device-scale-factor=1"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(driver, condition, what, timeout=60):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}; page status: {status_lines(driver)}")


def status_lines(driver):
    ids = ["page-status", "search-status", "compare-status", "composite-status", "watch-status"]
    return {i: driver.find_element(By.ID, i).text for i in ids}


def hits(driver, selector):
    return [
        {"sop": e.get_attribute("data-sop"), "patient": e.get_attribute("data-patient")}
        for e in driver.find_elements(By.CSS_SELECTOR, f"{selector} .hit")
    ]


def images_loaded(driver, selector):
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll(arguments[0])];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);",
        selector,
    )


def drop_file(driver, target_id, path: Path):
    """A drop event on the element with the file's bytes, as a drag from the desktop makes."""
    data = base64.b64encode(path.read_bytes()).decode()
    driver.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[1]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], arguments[2], {type: "application/dicom"}));
        const target = document.getElementById(arguments[0]);
        for (const type of ["dragover", "drop"]) {
          target.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        target_id,
        data,
        path.name,
    )


def set_options(driver, mode, filter_text, top_k=5):
    Select(driver.find_element(By.ID, "mode")).select_by_value(mode)
    field = driver.find_element(By.ID, "filter")
    field.clear()
    field.send_keys(filter_text)
    k = driver.find_element(By.ID, "top-k")
    k.clear()
    k.send_keys(str(top_k))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--page", required=True, help="the page's URL")
    parser.add_argument("--grpc", required=True, help="the gRPC port's URL")
    parser.add_argument("--studies", type=Path, required=True)
    parser.add_argument("--allowed-port", type=int, required=True)
    parser.add_argument("--refused-port", type=int, required=True)
    parser.add_argument("--screenshots", type=Path, required=True)
    parser.add_argument("ingest", nargs=argparse.REMAINDER, help="-- the command that sends the studies")
    args = parser.parse_args()
    args.screenshots.mkdir(parents=True, exist_ok=True)
    ingest = [a for a in args.ingest if a != "--"]

    root = Path(tempfile.mkdtemp(prefix="diptych-origins-"))
    (root / "caller.html").write_text(CALLER_HTML)
    (root / "viewer.html").write_text(VIEWER_HTML)
    origins = [serve_origin(args.allowed_port, root), serve_origin(args.refused_port, root)]

    # The query: a diseased slice of PHANTOM-0000 (it has a twin), and another patient's lesion.
    twins = sorted((args.studies / "TWIN-0000").glob("twin-*.dcm"))
    check(len(twins) >= 4, f"the demo studies hold twins ({len(twins)})")
    twin = twins[len(twins) // 2]
    index = twin.name[len("twin-") : -len(".dcm")]
    query = args.studies / "PHANTOM-0000" / f"slice-{index}.dcm"
    twin_sop = f"2.25.{3_000_000 + int(index)}"
    lesion = sorted((args.studies / "TWIN-0001").glob("twin-*.dcm"))[2].name.replace("twin-", "slice-")
    lesion = args.studies / "PHANTOM-0001" / lesion
    files = sorted(args.studies.rglob("*.dcm"))

    driver = browser()
    try:
        # Overview first, so the Watch stream is open when the studies arrive.
        driver.get(args.page + "#overview")
        wait(driver, lambda d: "gRPC-Web" in d.find_element(By.ID, "page-status").text, "the page to connect")
        wait(driver, lambda d: "model id" in d.find_element(By.ID, "model-card").text, "the model card")
        check("records" in driver.find_element(By.ID, "stats").text, "the index statistics are shown")
        wait(driver, lambda d: "waiting" in d.find_element(By.ID, "watch-status").text, "the Watch stream to open")
        started = time.monotonic()
        done = subprocess.run(ingest, capture_output=True, text=True, timeout=300)
        check(done.returncode == 0, f"the studies were sent: {done.stdout}{done.stderr}")
        FACTS["ingest_s"] = round(time.monotonic() - started, 2)
        studies = {"2.25.2000000", "2.25.2000001", "2.25.4000000", "2.25.4000001"}
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#watch-events li")) >= len(studies), "the four studies on Watch", 90)
        announced = {e.get_attribute("data-study") for e in driver.find_elements(By.CSS_SELECTOR, "#watch-events li")}
        check(announced == studies, f"Watch announced each study as it arrived: {announced}")
        FACTS["watch_after_s"] = round(time.monotonic() - started, 2)
        driver.find_element(By.ID, "overview-refresh").click()
        wait(driver, lambda d: f"records\n{len(files)}" in d.find_element(By.ID, "stats").text.replace("\t", "\n").replace(" ", "\n"), f"{len(files)} records in the statistics")
        driver.save_screenshot(str(args.screenshots / "page-overview.png"))

        # Search: drop the diseased slice, normal mode, its own patient filtered out.
        driver.find_element(By.ID, "tab-search").click()
        set_options(driver, "normal", 'body_part:BRAIN AND NOT patient_id:"PHANTOM-0000"')
        drop_file(driver, "q-drop", query)
        wait(driver, lambda d: len(hits(d, "#search-hits")) == 5, "the top 5 after the drop")
        wait(driver, lambda d: images_loaded(d, "#decomposition img"), "the decomposition images")
        parts = [f.get_attribute("id") for f in driver.find_elements(By.CSS_SELECTOR, "#decomposition figure")]
        check(parts == ["part-input", "part-reconstruction", "part-normal", "part-segmentation", "part-score"], f"the query is shown decomposed: {parts}")
        score = float(driver.find_element(By.CSS_SELECTOR, "#part-score .score").text)
        check(score > 0.5, f"the diseased slice has a high abnormality score ({score})")
        check(images_loaded(driver, "#search-hits img"), "every hit has its thumbnails")
        found = hits(driver, "#search-hits")
        check(found[0]["sop"] == twin_sop, f"normal mode: the healthy twin is hit #1 ({found[0]} vs {twin_sop})")
        check(all(h["patient"] != "PHANTOM-0000" for h in found), "the filter kept the query's patient out")
        first = driver.find_element(By.CSS_SELECTOR, "#search-hits .hit .caption").text
        check("#1" in first and "d =" in first and "TWIN-0000" in first, f"a hit shows rank, distance and metadata: {first!r}")
        driver.save_screenshot(str(args.screenshots / "page-search.png"))

        # Side by side: the same query in all three modes.
        set_options(driver, "normal", "")
        driver.find_element(By.ID, "compare-run").click()
        wait(driver, lambda d: all(len(hits(d, f"#mode-{m}")) == 5 for m in ["normal", "abnormal", "combined"]), "the top 5 in each mode")
        wait(driver, lambda d: images_loaded(d, "#compare-rows img"), "the side-by-side thumbnails")
        rows = {m: hits(driver, f"#mode-{m}") for m in ["normal", "abnormal", "combined"]}
        query_sop = f"2.25.{1_000_000 + int(index)}"
        check(rows["normal"][0]["sop"] in (query_sop, twin_sop) and twin_sop in [h["sop"] for h in rows["normal"][:2]], f"normal mode: the slice and its twin first ({rows['normal'][:2]})")
        for mode in ["abnormal", "combined"]:
            check(rows[mode][0]["sop"] == query_sop, f"{mode} mode: the query's own indexed slice first ({rows[mode][0]})")
        orders = {m: [h["sop"] for h in r] for m, r in rows.items()}
        check(orders["normal"] != orders["abnormal"], f"the modes rank differently: {orders}")
        FACTS["side_by_side"] = {m: [h["sop"] for h in r] for m, r in rows.items()}
        driver.save_screenshot(str(args.screenshots / "page-side-by-side.png"))

        # Composite: the healthy twin's anatomy with PHANTOM-0001's lesion.
        driver.find_element(By.ID, "tab-composite").click()
        driver.find_element(By.ID, "ca-uid").send_keys(twin_sop)
        driver.find_element(By.ID, "cl-file").send_keys(str(lesion))
        wait(driver, lambda d: "file" in d.find_element(By.ID, "cl-chosen").text, "the lesion file to be read")
        driver.find_element(By.ID, "composite-run").click()
        wait(driver, lambda d: len(hits(d, "#composite-hits")) == 5, "the composite's top 5")
        composite = hits(driver, "#composite-hits")
        check(any(h["patient"] in ("PHANTOM-0000", "TWIN-0000") for h in composite), f"the composite finds the anatomy's subject: {composite}")
        check(any(h["patient"].startswith("PHANTOM-") for h in composite), f"and lesioned slices: {composite}")
        FACTS["composite"] = [h["sop"] for h in composite]
        driver.save_screenshot(str(args.screenshots / "page-composite.png"))

        # Filters: one that matches nothing, one that is malformed.
        driver.find_element(By.ID, "tab-search").click()
        set_options(driver, "combined", 'patient_id:"NOBODY"')
        driver.find_element(By.ID, "search-run").click()
        wait(driver, lambda d: "no record matched" in d.find_element(By.ID, "search-hits").text, "the empty answer")
        check("0 of" in driver.find_element(By.ID, "search-hits").text, "an empty filter says none passed")
        set_options(driver, "combined", "modality:(MR")
        driver.find_element(By.ID, "search-run").click()
        wait(driver, lambda d: "InvalidArgument" in d.find_element(By.ID, "search-status").text, "the server's refusal")
        refusal = driver.find_element(By.ID, "search-status").text
        check("filter" in refusal.lower() and "error" in driver.find_element(By.ID, "search-status").get_attribute("class"), f"the malformed filter's message is shown: {refusal!r}")
        FACTS["malformed_filter_message"] = refusal

        # The viewer deep link of a hit.
        set_options(driver, "normal", "")
        driver.find_element(By.ID, "search-run").click()
        wait(driver, lambda d: len(hits(d, "#search-hits")) == 5, "the hits again")
        link = driver.find_element(By.CSS_SELECTOR, "#search-hits .hit a.viewer")
        href = link.get_attribute("href")
        main_window = driver.current_window_handle
        link.click()
        wait(driver, lambda d: len(d.window_handles) == 2, "the viewer's window")
        driver.switch_to.window([h for h in driver.window_handles if h != main_window][0])
        wait(driver, lambda d: "viewer opened study 2.25." in d.find_element(By.ID, "study").text, "the viewer page")
        check(driver.current_url == href and href.startswith(f"http://127.0.0.1:{args.allowed_port}/viewer.html?study=2.25."), f"the deep link opened the viewer: {driver.current_url}")
        driver.close()
        driver.switch_to.window(main_window)

        # Cross-origin pages: the allow-list admits one and not the other.
        answers = {}
        for name, port in [("allowed", args.allowed_port), ("refused", args.refused_port)]:
            driver.get(f"http://127.0.0.1:{port}/caller.html?grpc={args.grpc}")
            wait(driver, lambda d: "calling" not in d.find_element(By.ID, "result").text, f"the {name} origin's call")
            answers[name] = driver.find_element(By.ID, "result").text
        check(answers["allowed"].startswith("answered: HTTP 200") and "grpc-status 0" in answers["allowed"], f"the allowed origin reads the answer: {answers['allowed']}")
        check(answers["refused"].startswith("refused: TypeError"), f"the browser blocks the other origin: {answers['refused']}")
        FACTS["cross_origin"] = answers
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        FACTS["browser_errors_on_refused_origin"] = len(errors)
    finally:
        driver.quit()
        for server in origins:
            server.shutdown()
    FACTS["checks"] = len(CHECKS)
    print(json.dumps(FACTS))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}\npassed before it: {json.dumps(CHECKS, indent=1)}")
        sys.exit(1)
