// Where a query (or one side of a composite) comes from: a DICOM file dropped or chosen, or an
// indexed slice named by its SOP Instance UID (typed, or picked from a result).

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CodeSourceSchema, QuerySchema } from "./gen/diptych/v1/search_pb";
import { byId, say } from "./dom";

/** A DICOM file's bytes, or an indexed slice. */
export type Source =
  | { kind: "file"; name: string; bytes: Uint8Array }
  | { kind: "uid"; uid: string };

/**
 * One picker of the page: `#<prefix>-drop` (a drop zone holding `#<prefix>-file`),
 * `#<prefix>-uid` (a text field) and `#<prefix>-chosen` (what is chosen, in words).
 */
export class SourcePicker {
  private file: Source | undefined;
  private readonly uid: HTMLInputElement;
  private readonly chosen: HTMLElement;
  private listeners: Array<() => void> = [];

  constructor(prefix: string) {
    const drop = byId(`${prefix}-drop`);
    const input = byId<HTMLInputElement>(`${prefix}-file`);
    this.uid = byId<HTMLInputElement>(`${prefix}-uid`);
    this.chosen = byId(`${prefix}-chosen`);
    input.addEventListener("change", () => {
      if (input.files?.[0]) void this.takeFile(input.files[0]);
    });
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer?.files[0];
      if (file) void this.takeFile(file);
    });
    this.uid.addEventListener("input", () => {
      this.file = undefined;
      this.describe();
    });
  }

  /** Calls `listener` whenever a new source is chosen. */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** The chosen source: the UID field when filled, else the last file. */
  get(): Source | undefined {
    const uid = this.uid.value.trim();
    return uid ? { kind: "uid", uid } : this.file;
  }

  /** Chooses an indexed slice (e.g. a hit of a result). */
  setUid(uid: string): void {
    this.uid.value = uid;
    this.file = undefined;
    this.describe();
    this.listeners.forEach((l) => l());
  }

  private async takeFile(file: File): Promise<void> {
    this.file = { kind: "file", name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) };
    this.uid.value = "";
    this.describe();
    this.listeners.forEach((l) => l());
  }

  private describe(): void {
    const source = this.get();
    say(
      this.chosen,
      !source ? "nothing chosen" : source.kind === "file" ? `file ${source.name}` : `indexed slice ${source.uid}`,
    );
  }
}

/** The search query of one source. */
export function queryOf(source: Source): MessageInitShape<typeof QuerySchema> {
  return source.kind === "file"
    ? { source: { case: "image", value: { source: { case: "dicom", value: source.bytes } } } }
    : { source: { case: "indexed", value: { sopInstanceUid: source.uid } } };
}

/** One side of a composite query. */
export function codeSourceOf(source: Source): MessageInitShape<typeof CodeSourceSchema> {
  return source.kind === "file"
    ? { source: { case: "image", value: { source: { case: "dicom", value: source.bytes } } } }
    : { source: { case: "indexed", value: { sopInstanceUid: source.uid } } };
}
