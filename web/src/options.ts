// The search options of the form: mode and weights, filter, grouping, top-k.

import { Grouping, SearchMode } from "./gen/diptych/v1/common_pb";
import { byId } from "./dom";

/** The fields of a SearchRequest that the form sets (all but its query). */
export interface Options {
  mode: SearchMode;
  normalWeight: number;
  abnormalWeight: number;
  filter: string;
  grouping: Grouping;
  topK: number;
  includeThumbnails: boolean;
}

const MODES: Record<string, SearchMode> = {
  normal: SearchMode.NORMAL,
  abnormal: SearchMode.ABNORMAL,
  combined: SearchMode.COMBINED,
};

const GROUPINGS: Record<string, Grouping> = {
  instance: Grouping.INSTANCE,
  series: Grouping.SERIES,
  study: Grouping.STUDY,
};

/** The mode's name as the page writes it. */
export function modeName(mode: SearchMode): string {
  return Object.keys(MODES).find((k) => MODES[k] === mode) ?? "unspecified";
}

/** The three modes, in the paper's order. */
export const ALL_MODES = [SearchMode.NORMAL, SearchMode.ABNORMAL, SearchMode.COMBINED];

/** The options as the form holds them now. */
export function readOptions(): Options {
  const number = (id: string) => Number(byId<HTMLInputElement>(id).value);
  return {
    mode: MODES[byId<HTMLSelectElement>("mode").value],
    normalWeight: number("normal-weight"),
    abnormalWeight: number("abnormal-weight"),
    filter: byId<HTMLInputElement>("filter").value.trim(),
    grouping: GROUPINGS[byId<HTMLSelectElement>("grouping").value],
    topK: number("top-k"),
    includeThumbnails: true,
  };
}
