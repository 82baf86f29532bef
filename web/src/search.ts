// The Search view: the query decomposed (input, x̂, x̃, segmentation over the input, abnormality
// score) and its hits in the chosen mode.

import type { Api } from "./api";
import { explain } from "./api";
import { byId, el, img, say } from "./dom";
import { showHits, type Pick } from "./hits";
import { SearchMode } from "./gen/diptych/v1/common_pb";
import { modeName, readOptions } from "./options";
import { queryOf, type Source } from "./source";

function figure(child: HTMLElement, caption: string, id: string): HTMLElement {
  const f = el("figure");
  f.id = id;
  f.append(child, el("figcaption", "", caption));
  return f;
}

/** Shows what the model makes of the query: Decompose for a file, stored codes for a UID. */
async function decompose(api: Api, source: Source, target: HTMLElement): Promise<void> {
  if (source.kind === "file") {
    const d = await api.image.decompose({
      image: { source: { case: "dicom", value: source.bytes } },
    });
    const overlay = el("div", "overlay");
    overlay.append(img(d.input, "input"), img(d.segmentation, "segmentation", "segmentation"));
    target.replaceChildren(
      figure(img(d.input, "the pre-processed input"), "input", "part-input"),
      figure(img(d.reconstruction, "reconstruction x̂"), "x̂ reconstruction", "part-reconstruction"),
      figure(img(d.normalAppearing, "normal-appearing x̃"), "x̃ normal-appearing", "part-normal"),
      figure(overlay, "segmentation over the input", "part-segmentation"),
      figure(el("div", "score", d.abnormality.toFixed(3)), "abnormality score", "part-score"),
    );
    return;
  }
  // An indexed slice: diptych keeps codes, not pixels, so show what its codes decode to. A
  // UID is digits and dots; anything else is left to the search's own refusal.
  if (!/^[0-9]+(\.[0-9]+)*$/.test(source.uid)) return;
  const answer = await api.search.search({
    query: queryOf(source),
    mode: SearchMode.COMBINED,
    filter: `sop_instance_uid:"${source.uid}"`,
    topK: 1,
    includeThumbnails: true,
  });
  const hit = answer.hits[0];
  if (!hit) throw new Error(`the slice ${source.uid} is not indexed`);
  target.replaceChildren(
    figure(img(hit.thumbnail, "reconstruction x̂"), "x̂ from its stored codes", "part-reconstruction"),
    figure(img(hit.normalAppearing, "normal-appearing x̃"), "x̃ from its stored codes", "part-normal"),
    figure(
      el("div", "score", (hit.metadata?.abnormality ?? 0).toFixed(3)),
      "abnormality score",
      "part-score",
    ),
  );
}

/** Runs the Search view for `source`. */
export async function runSearch(api: Api, source: Source, pick: Pick): Promise<void> {
  const status = byId("search-status");
  const options = readOptions();
  say(status, `searching in ${modeName(options.mode)} mode…`);
  const parts = byId("decomposition");
  const hits = byId("search-hits");
  parts.replaceChildren();
  hits.replaceChildren();
  try {
    const [answer] = await Promise.all([
      api.search.search({ ...options, query: queryOf(source) }),
      decompose(api, source, parts),
    ]);
    showHits(hits, answer, pick);
    say(
      status,
      `${answer.hits.length} hits of ${answer.recordsMatched} records matched (${answer.recordsTotal} indexed), ` +
        `${answer.elapsedMs.toFixed(1)} ms, model ${answer.modelId}`,
    );
  } catch (error) {
    say(status, explain(error, api), true);
  }
}
