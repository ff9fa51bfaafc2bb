// The person's photos as a grid of thumbnails with their status, kept live while any is pending.
import { api, authed, type Image } from "../api";
import { formatDate, h, messageBox } from "../dom";
import { poll } from "../poll";
import { describeProblem } from "../problems";
import { STATUS_WORDS } from "../quality";
import type { Page } from "../router";

const PAGE_SIZE = 24;

export function thumbnail(image: Image): HTMLElement {
  const when = formatDate(image.created_at);
  if (image.thumbnail_url) {
    return h("img", { src: image.thumbnail_url, alt: `Photo uploaded ${when}`, loading: "lazy", width: 160, height: 160 });
  }
  return h("div", { class: "thumb-placeholder", "aria-hidden": "true" }, STATUS_WORDS[image.status]);
}

function card(image: Image): HTMLLIElement {
  const tags = image.tags.length ? h("span", { class: "tags" }, image.tags.join(", ")) : null;
  return h(
    "li",
    { class: "card", "data-id": image.id, "data-status": image.status },
    h(
      "a",
      { href: `#/images/${encodeURIComponent(image.id)}` },
      thumbnail(image),
      h(
        "span",
        { class: "caption" },
        h("span", { class: `status status-${image.status}` }, STATUS_WORDS[image.status]),
        h("span", {}, formatDate(image.created_at)),
        tags,
      ),
    ),
  );
}

export const historyPage: Page = {
  title: "Your photos",
  auth: true,
  async render(root) {
    const message = messageBox();
    const grid = h("ul", { class: "grid", "aria-label": "Your photos, newest first" });
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show older photos");
    const empty = h("p", { hidden: true }, "No photos yet. ", h("a", { href: "#/upload" }, "Upload your first photo"), ".");
    let cursor: string | null = null;
    let stop: (() => void) | undefined;

    root.append(h("h1", { tabindex: -1 }, "Your photos"), message.element, empty, grid, more);

    const pending = () => grid.querySelector('[data-status="queued"], [data-status="processing"]') !== null;
    const watch = () => {
      if (stop || !pending()) return;
      stop = poll(async () => {
        const { data } = await authed(() => api.GET("/v1/images", { params: { query: { limit: PAGE_SIZE } } }));
        for (const image of data?.items ?? []) {
          const old = grid.querySelector(`[data-id="${CSS.escape(image.id)}"]`);
          if (old && old.getAttribute("data-status") !== image.status) old.replaceWith(card(image));
        }
        const done = !pending();
        if (done) stop = undefined;
        return done;
      });
    };

    const load = async () => {
      more.disabled = true;
      const { data, error } = await authed(() =>
        api.GET("/v1/images", { params: { query: { limit: PAGE_SIZE, cursor: cursor ?? undefined } } }),
      );
      more.disabled = false;
      if (!data) {
        message.error(describeProblem(error));
        return;
      }
      grid.append(...data.items.map(card));
      // A short page is the last one, whatever the cursor says.
      cursor = data.items.length < PAGE_SIZE ? null : (data.next_cursor ?? null);
      more.hidden = cursor === null;
      empty.hidden = grid.childElementCount > 0;
      watch();
    };
    more.addEventListener("click", () => void load());
    await load();
    return () => stop?.();
  },
};
