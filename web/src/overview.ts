// Overview: index statistics, capabilities and the model card, and the studies announced on the
// Watch stream as they arrive.

import type { Api } from "./api";
import { explain } from "./api";
import { byId, el, say } from "./dom";
import { modeName } from "./options";

function table(target: HTMLElement, rows: Array<[string, string]>): void {
  const body = rows.map(([k, v]) => {
    const tr = el("tr");
    tr.append(el("th", "", k), el("td", "", v));
    return tr;
  });
  const t = el("table");
  t.append(...body);
  target.replaceChildren(t);
}

/** Fills the statistics, capabilities and model card; each says on its own if refused. */
export async function loadOverview(api: Api): Promise<string[]> {
  const fields: string[] = [];
  const stats = byId("stats");
  const caps = byId("capabilities");
  const card = byId("model-card");
  await Promise.all([
    api.info.getIndexStats({}).then(
      (s) =>
        table(stats, [
          ["records", String(s.records)],
          ["instances", String(s.instances)],
          ["series", String(s.series)],
          ["studies", String(s.studies)],
          ["patients", String(s.patients)],
          ["pending", String(s.pending)],
          ["model", s.modelId],
        ]),
      (e) => say(stats, explain(e, api), true),
    ),
    api.info.getCapabilities({}).then(
      (c) => {
        fields.push(...c.filterFields.map((f) => f.name));
        table(caps, [
          ["version", c.version],
          ["execution provider", c.executionProvider],
          ["modes", c.modes.map(modeName).join(", ")],
          ["filter fields", c.filterFields.map((f) => `${f.name} (${f.kind})`).join(", ")],
          ["largest top-k", String(c.maxTopK)],
          ["DICOM", c.dicomAeTitle ? `${c.dicomAeTitle} on port ${c.dicomPort}` : "off"],
        ]);
      },
      (e) => say(caps, explain(e, api), true),
    ),
    api.info.getModelCard({}).then(
      (m) =>
        table(card, [
          ["model id", m.modelId],
          ["input", `${m.inputSize}×${m.inputSize}`],
          ["grid", `${m.gridRows}×${m.gridColumns}`],
          ["codebooks", `K = ${m.codebookSize}, D = ${m.codeDim}`],
          ["normal labels", m.normalLabels.join(", ")],
          ["abnormal labels", m.abnormalLabels.join(", ")],
          ["encoder SHA-256", m.encoderSha256.slice(0, 16) + "…"],
        ]),
      (e) => say(card, explain(e, api), true),
    ),
  ]);
  return fields;
}

/** Follows the Watch stream until the page closes, newest study first; reconnects on errors. */
export async function followWatch(api: Api): Promise<void> {
  const list = byId("watch-events");
  const status = byId("watch-status");
  for (;;) {
    try {
      say(status, "waiting for studies to arrive (a study counts as received after the quiet period)…");
      for await (const event of api.search.watch({ topK: 3 })) {
        const li = el("li", "watch-event");
        li.dataset.study = event.studyInstanceUid;
        const when = new Date(Number(event.completedUnixMs)).toLocaleTimeString();
        li.append(el("strong", "", `${when} study ${event.studyInstanceUid} (${event.slices} slices)`));
        for (const r of event.results) {
          const similar = r.hits.map((h) => `${h.metadata?.patientId ?? "?"} (${h.distance.toFixed(1)})`);
          li.append(el("div", "", `${modeName(r.mode)}: ${similar.join(", ") || "none"}`));
        }
        list.prepend(li);
        say(status, "following the Watch stream");
      }
    } catch (error) {
      say(status, `${explain(error, api)}; reconnecting in 5 s`, true);
    }
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}
