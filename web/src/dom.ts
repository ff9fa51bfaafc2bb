// Elements are built with the DOM API, never from HTML strings: text from the API is always text.

type Attr = string | number | boolean | null | undefined | EventListener;
export type Child = Node | string | number | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, Attr> = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (typeof value === "function") {
      element.addEventListener(name.replace(/^on/, "").toLowerCase(), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      element.setAttribute(name, String(value));
    }
  }
  append(element, ...children);
  return element;
}

export function append(parent: Element, ...children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : String(child));
  }
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag: string, attrs: Record<string, string | number> = {}, ...children: (Node | string)[]): SVGElement {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  element.append(...children);
  return element as SVGElement;
}

let uid = 0;
export function id(prefix: string): string {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form control: the label names the control for screen readers and clicks. */
export function field(
  label: string,
  control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement,
  hint?: string,
): HTMLDivElement {
  control.id ||= id("field");
  const parts: Child[] = [h("label", { for: control.id }, label)];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("p", { class: "hint", id: hintId }, hint));
  }
  parts.push(control);
  return h("div", { class: "field" }, ...parts);
}

/** A message region: errors are announced at once (alert), other news politely (status). */
export function messageBox(): { element: HTMLDivElement; error(text: string): void; info(text: string): void; clear(): void } {
  const element = h("div", { class: "message", role: "alert", hidden: true });
  const show = (text: string, kind: "error" | "info") => {
    element.className = `message ${kind}`;
    element.setAttribute("role", kind === "error" ? "alert" : "status");
    element.textContent = text;
    element.hidden = false;
  };
  return {
    element,
    error: (text) => show(text, "error"),
    info: (text) => show(text, "info"),
    clear: () => {
      element.hidden = true;
      element.textContent = "";
    },
  };
}

export function announce(text: string): void {
  const announcer = document.getElementById("announcer");
  if (announcer) {
    announcer.textContent = "";
    // A fresh node, so that the same words twice are read twice.
    window.setTimeout(() => (announcer.textContent = text), 50);
  }
}

export function formatDate(value: string | null | undefined): string {
  if (!value) return "";
  return new Date(value).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
