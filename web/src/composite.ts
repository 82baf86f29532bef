// Composite: the anatomy (normal code) of one slice with the lesion (abnormal code) of another.

import type { Api } from "./api";
import { explain } from "./api";
import { byId, say } from "./dom";
import { showHits, type Pick } from "./hits";
import { SearchMode } from "./gen/diptych/v1/common_pb";
import { readOptions } from "./options";
import { codeSourceOf, type SourcePicker } from "./source";

/** Runs the composite search of the two pickers, in combined mode with the form's weights. */
export async function runComposite(
  api: Api,
  anatomy: SourcePicker,
  lesion: SourcePicker,
  pick: Pick,
): Promise<void> {
  const status = byId("composite-status");
  const list = byId("composite-hits");
  const normal = anatomy.get();
  const abnormal = lesion.get();
  if (!normal || !abnormal) {
    say(status, "choose both: the slice whose anatomy you want, and the slice whose lesion you want", true);
    return;
  }
  list.replaceChildren();
  say(status, "searching…");
  try {
    const answer = await api.search.search({
      ...readOptions(),
      mode: SearchMode.COMBINED,
      query: {
        source: {
          case: "composite",
          value: { normalFrom: codeSourceOf(normal), abnormalFrom: codeSourceOf(abnormal) },
        },
      },
    });
    showHits(list, answer, pick);
    say(status, `${answer.hits.length} hits: anatomy like the first, lesion like the second`);
  } catch (error) {
    say(status, explain(error, api), true);
  }
}
