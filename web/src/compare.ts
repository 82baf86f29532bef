// Side by side: the same query's top-k in all three modes at once (the paper's Figure 3, live).

import type { Api } from "./api";
import { explain } from "./api";
import { byId, el, say } from "./dom";
import { showHits, type Pick } from "./hits";
import { ALL_MODES, modeName, readOptions } from "./options";
import { queryOf, type Source } from "./source";

/** Runs the three searches and shows one row per mode. */
export async function runCompare(api: Api, source: Source, pick: Pick): Promise<void> {
  const status = byId("compare-status");
  const rows = byId("compare-rows");
  rows.replaceChildren();
  say(status, "searching in all three modes…");
  const options = readOptions();
  try {
    const answers = await Promise.all(
      ALL_MODES.map((mode) => api.search.search({ ...options, mode, query: queryOf(source) })),
    );
    answers.forEach((answer, i) => {
      const name = modeName(ALL_MODES[i]);
      const section = el("section", "mode-row");
      section.id = `mode-${name}`;
      const list = el("ol", "hits");
      section.append(el("h3", "", `${name} mode`), list);
      showHits(list, answer, pick);
      rows.append(section);
    });
    say(status, `top ${options.topK} in each mode`);
  } catch (error) {
    say(status, explain(error, api), true);
  }
}
