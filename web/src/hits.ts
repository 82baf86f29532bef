// A search answer as a grid of thumbnails: rank, distance, what the slice is, and its links.

import type { SearchHit, SearchResponse } from "./gen/diptych/v1/search_pb";
import { el, img } from "./dom";

/** What a hit's "search from this" button does with its SOP Instance UID. */
export type Pick = (uid: string) => void;

function card(hit: SearchHit, pick: Pick): HTMLElement {
  const li = el("li", "hit");
  const uid = hit.slice?.sopInstanceUid ?? "";
  li.dataset.sop = uid;
  li.dataset.patient = hit.metadata?.patientId ?? "";
  const pictures = el("div", "pictures");
  const picture = (image: typeof hit.thumbnail, alt: string, label: string) => {
    const f = el("figure");
    f.append(img(image, alt, "thumb"), el("figcaption", "", label));
    return f;
  };
  pictures.append(
    picture(hit.thumbnail, `#${hit.rank}: reconstruction x̂ from its codes`, "x̂"),
    picture(hit.normalAppearing, `#${hit.rank}: normal-appearing x̃`, "x̃"),
  );
  const m = hit.metadata;
  const caption = el("div", "caption");
  caption.append(
    el("strong", "rank", `#${hit.rank}`),
    el("span", "distance", ` d = ${hit.distance.toFixed(2)}`),
    el("div", "dists", `d_n ${hit.normalDistance.toFixed(2)} · d_a ${hit.abnormalDistance.toFixed(2)}`),
    el("div", "patient", m ? `${m.patientId} · ${m.modality} ${m.bodyPart}` : ""),
    el("div", "study", m ? `${m.studyDate} · ${m.seriesDescription} #${m.instanceNumber}` : ""),
    el("div", "abnormality", m ? `abnormality ${m.abnormality.toFixed(2)}` : ""),
  );
  if (hit.groupSlices > 1) caption.append(el("div", "group", `${hit.groupSlices} slices matched`));
  const actions = el("div", "actions");
  const again = el("button", "pick", "search from this");
  again.type = "button";
  again.title = `search with the indexed slice ${uid}`;
  again.addEventListener("click", () => pick(uid));
  actions.append(again);
  if (hit.viewerUrl) {
    const link = el("a", "viewer", "open in viewer");
    link.href = hit.viewerUrl;
    link.target = "_blank";
    link.rel = "noopener";
    actions.append(link);
  }
  caption.append(actions);
  li.append(pictures, caption);
  return li;
}

/** Replaces `list`'s content with the hits of `answer`. */
export function showHits(list: HTMLElement, answer: SearchResponse, pick: Pick): void {
  list.replaceChildren(...answer.hits.map((hit) => card(hit, pick)));
  if (answer.hits.length === 0) {
    list.append(el("li", "empty", `no record matched (${answer.recordsMatched} of ${answer.recordsTotal} passed the filter)`));
  }
}
