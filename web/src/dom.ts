// Small DOM helpers: elements by id, new elements with text, PNG bytes as image sources.

import type { EncodedImage } from "./gen/diptych/v1/common_pb";

/** The element with this id (the page's HTML defines every id the script uses). */
export function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element as T;
}

/** A new element with a class and text. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = "",
  text = "",
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text) element.textContent = text;
  return element;
}

/** A data: URL of an API image's PNG bytes, or "" when it carries none. */
export function pngUrl(image: EncodedImage | undefined): string {
  if (!image || image.data.case !== "png") return "";
  let binary = "";
  const bytes = image.data.value;
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return `data:image/png;base64,${btoa(binary)}`;
}

/** An <img> of an API image with its alternative text. */
export function img(image: EncodedImage | undefined, alt: string, className = ""): HTMLImageElement {
  const element = el("img", className);
  element.src = pngUrl(image);
  element.alt = alt;
  return element;
}

/** Shows a message in a status line (role=status or alert), or clears it. */
export function say(target: HTMLElement, message: string, error = false): void {
  target.textContent = message;
  target.classList.toggle("error", error);
}
