// The page diptych serves at /: a client of the public gRPC API over gRPC-Web, in four views
// (Search, Side by side, Composite, Overview). No framework: the HTML is in index.html, this
// script wires it up.

import { connect, setToken, token } from "./api";
import { runCompare } from "./compare";
import { runComposite } from "./composite";
import { byId, el, say } from "./dom";
import { followWatch, loadOverview } from "./overview";
import { runSearch } from "./search";
import { SourcePicker } from "./source";

const VIEWS = ["search", "compare", "composite", "overview"];

/** Shows one view; the tabs follow the ARIA tab pattern (arrow keys move between them). */
function show(view: string): void {
  for (const name of VIEWS) {
    const tab = byId(`tab-${name}`);
    const selected = name === view;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    byId(`view-${name}`).hidden = !selected;
  }
  history.replaceState(null, "", `#${view}`);
}

async function main(): Promise<void> {
  const status = byId("page-status");
  const tokenField = byId<HTMLInputElement>("token");
  tokenField.value = token();
  tokenField.addEventListener("change", () => setToken(tokenField.value.trim()));

  for (const [i, name] of VIEWS.entries()) {
    const tab = byId(`tab-${name}`);
    tab.addEventListener("click", () => show(name));
    tab.addEventListener("keydown", (event) => {
      const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
      if (!step) return;
      const next = VIEWS[(i + step + VIEWS.length) % VIEWS.length];
      show(next);
      byId(`tab-${next}`).focus();
    });
  }
  show(VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "search");

  const api = await connect();
  say(status, `API: ${api.baseUrl} (gRPC-Web)`);
  const query = new SourcePicker("q");
  const anatomy = new SourcePicker("ca");
  const lesion = new SourcePicker("cl");

  const current = () => {
    const source = query.get();
    if (!source) say(byId("search-status"), "drop a DICOM file or enter the UID of an indexed slice first", true);
    return source;
  };
  const pick = (uid: string) => {
    query.setUid(uid);
    show("search");
  };
  const search = () => {
    const source = current();
    if (source) void runSearch(api, source, pick);
  };
  query.onChange(search);
  byId("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  byId("compare-run").addEventListener("click", () => {
    const source = current();
    if (source) {
      show("compare");
      void runCompare(api, source, pick);
    }
  });
  byId("composite-run").addEventListener("click", () => void runComposite(api, anatomy, lesion, pick));
  byId("overview-refresh").addEventListener("click", () => void loadOverview(api));

  const fields = await loadOverview(api);
  const list = byId("filter-fields");
  list.replaceChildren(...fields.map((f) => Object.assign(el("option"), { value: `${f}:` })));
  void followWatch(api);
}

main().catch((error) => say(byId("page-status"), `the page could not start: ${error}`, true));
