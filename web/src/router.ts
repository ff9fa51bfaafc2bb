// Hash routes (#/history, #/images/ID): the gateway serves one page at /, and every address
// of the app still works after a reload or as a bookmark.
import { session } from "./session";

export type Cleanup = () => void;

export interface Page {
  title: string;
  /** Needs a signed-in user; `admin`: and the admin role. */
  auth?: boolean;
  admin?: boolean;
  render(root: HTMLElement, params: Record<string, string>, query: URLSearchParams): void | Cleanup | Promise<void | Cleanup>;
}

const routes: [RegExp, Page][] = [];
let cleanup: Cleanup | undefined;
let firstRender = true;
let fallback = "/";

export function route(pattern: string, page: Page): void {
  const regex = new RegExp(`^${pattern.replace(/:(\w+)/g, "(?<$1>[^/]+)")}$`);
  routes.push([regex, page]);
}

export function setFallback(path: string): void {
  fallback = path;
}

export function currentPath(): string {
  return location.hash.startsWith("#/") ? location.hash.slice(1) : "/";
}

export function navigate(path: string): void {
  if (currentPath() === path) void render();
  else location.hash = `#${path}`;
}

export async function render(): Promise<void> {
  const [path, search = ""] = currentPath().split("?");
  const match = routes.map(([regex, page]) => [regex.exec(path), page] as const).find(([found]) => found);
  if (!match) {
    navigate(fallback);
    return;
  }
  const [found, page] = match;
  if (page.auth && !(await session.ready())) {
    navigate(`/sign-in?next=${encodeURIComponent(currentPath())}`);
    return;
  }
  if (page.admin && !session.isAdmin()) {
    navigate("/");
    return;
  }
  cleanup?.();
  cleanup = undefined;
  const root = document.getElementById("main") as HTMLElement;
  root.replaceChildren();
  document.title = `${page.title} · Face restoration`;
  const params = Object.fromEntries(Object.entries(found?.groups ?? {}).map(([k, v]) => [k, decodeURIComponent(v)]));
  const result = await page.render(root, params, new URLSearchParams(search));
  if (typeof result === "function") cleanup = result;
  // After the first page, moving focus to the new page's heading tells screen readers where they are.
  if (!firstRender) (root.querySelector("h1") as HTMLElement | null)?.focus();
  firstRender = false;
  window.dispatchEvent(new Event("routechange"));
}

export function startRouter(): void {
  window.addEventListener("hashchange", () => {
    // In-page anchors (the skip link) are not routes.
    if (location.hash.startsWith("#/") || location.hash === "") void render();
  });
  void render();
}
