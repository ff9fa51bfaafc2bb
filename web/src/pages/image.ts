// One photo: its live status, the before/after comparison, the quality in words, delete.
import { api, authed, type Image } from "../api";
import { announce, formatDate, h, messageBox } from "../dom";
import { poll } from "../poll";
import { describeProblem } from "../problems";
import { STATUS_WORDS, failureWords, qualityWords } from "../quality";
import { navigate, type Page } from "../router";
import { editForm, ratingForm, reportForm } from "./image-actions";

/** Two pictures on top of each other; a slider (a range input: keyboard, touch and screen readers) moves the line. */
export function comparison(image: Image): HTMLElement {
  const before = h("img", { src: image.original_url ?? "", alt: "Before: the original photo", class: "before" });
  const after = h("img", { src: image.restored_url ?? "", alt: "After: the restored photo", class: "after" });
  const slider = h("input", {
    type: "range",
    min: 0,
    max: 100,
    value: 50,
    step: 1,
    id: "compare-slider",
    "aria-valuetext": "Half before, half after",
  });
  const frame = h("div", { class: "compare-frame" }, before, after, h("div", { class: "compare-line", "aria-hidden": "true" }));
  if (image.width && image.height) frame.style.aspectRatio = `${image.width} / ${image.height}`;
  const line = frame.querySelector(".compare-line") as HTMLElement;
  const update = () => {
    const share = Number(slider.value);
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    after.style.clipPath = `inset(0 0 0 ${share}%)`;
    line.style.left = `${share}%`;
    slider.setAttribute("aria-valuetext", `${share}% before, ${100 - share}% after`);
  };
  slider.addEventListener("input", update);
  update();
  return h(
    "figure",
    { class: "compare" },
    frame,
    h(
      "div",
      { class: "compare-control" },
      h("label", { for: "compare-slider" }, "Compare before and after"),
      h("span", { "aria-hidden": "true" }, "Before"),
      slider,
      h("span", { "aria-hidden": "true" }, "After"),
    ),
    h("figcaption", {}, "Left of the line: the original. Right of the line: the restored photo. Use the slider or the arrow keys."),
  );
}

function details(image: Image): HTMLElement {
  const rows: [string, string][] = [
    ["Uploaded", formatDate(image.created_at)],
    ["Size", image.width && image.height ? `${image.width} × ${image.height} pixels` : ""],
    ["Tags", image.tags.join(", ")],
    ["Note", image.note],
    ["Location", image.location],
  ];
  return h(
    "dl",
    { class: "details" },
    ...rows.filter(([, value]) => value).flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

export const imagePage: Page = {
  title: "Photo",
  auth: true,
  async render(root, params, query) {
    const message = messageBox();
    const status = h("p", { class: "status-line", role: "status", "aria-live": "polite" });
    const result = h("section", { "aria-label": "Result" });
    const heading = h("h1", { tabindex: -1 }, "Photo");
    const remove = h("button", { type: "button", class: "danger" }, "Delete photo");
    let stop: (() => void) | undefined;
    root.append(heading, message.element, status, result);

    const show = (image: Image) => {
      heading.textContent = `Photo uploaded ${formatDate(image.created_at)}`;
      status.textContent = STATUS_WORDS[image.status] + (image.status === "queued" || image.status === "processing" ? "…" : "");
      status.dataset.status = image.status;
      const parts: (HTMLElement | null)[] = [];
      if (image.status === "done") {
        parts.push(comparison(image));
        if (image.quality) {
          parts.push(h("h2", {}, "How it went"), h("ul", { class: "quality" }, ...qualityWords(image.quality, image.faces).map((text) => h("li", {}, text))));
        }
        parts.push(
          h(
            "p",
            { class: "actions" },
            h("a", { href: image.restored_url ?? "", download: `restored-${image.id}.jpg`, class: "button" }, "Download the restored photo"),
            h("a", { href: image.original_url ?? "", download: `original-${image.id}`, class: "button secondary" }, "Download the original"),
            image.faces ? h("a", { href: `#/search?image=${encodeURIComponent(image.id)}&face=0`, class: "button secondary" }, "Search for faces like these") : null,
          ),
        );
      } else if (image.status === "failed") {
        parts.push(h("p", { class: "message error" }, failureWords(image.error)));
      } else if (image.original_url) {
        parts.push(h("img", { src: image.original_url, alt: "The original photo, being restored", class: "pending-original" }));
      }
      if (image.under_review) parts.push(h("p", { class: "message info" }, "An admin is reviewing this photo."));
      let facts = details(image);
      const saved = (updated: Image) => {
        const fresh = details(updated);
        facts.replaceWith(fresh);
        facts = fresh;
      };
      parts.push(h("h2", {}, "Details"), facts, editForm(image, saved));
      if (image.status === "done") parts.push(ratingForm(image), reportForm(image));
      parts.push(h("h2", {}, "Delete"), h("p", { class: "actions" }, remove));
      result.replaceChildren(...parts.filter((part): part is HTMLElement => part !== null));
    };

    const fetchImage = () => authed(() => api.GET("/v1/images/{image_id}", { params: { path: { image_id: params.id } } }));
    let first = await fetchImage();
    if (query.get("new") && first.response.status === 404) {
      // Just uploaded: the history learns of it from an event, a moment after the upload's answer.
      status.textContent = STATUS_WORDS.queued + "…";
      for (let delay = 250; first.response.status === 404 && delay < 4000; delay *= 1.5) {
        await new Promise((resolve) => window.setTimeout(resolve, delay));
        first = await fetchImage();
      }
    }
    if (!first.data) {
      message.error(describeProblem(first.error));
      root.append(h("p", {}, h("a", { href: "#/history" }, "Back to your photos")));
      return;
    }
    show(first.data);
    if (first.data.status === "queued" || first.data.status === "processing") {
      let last: Image["status"] = first.data.status;
      stop = poll(async () => {
        const { data } = await fetchImage();
        if (!data) return false;
        if (data.status !== last) {
          last = data.status;
          show(data);
          if (data.status === "done") announce("Your photo is restored.");
          if (data.status === "failed") announce("Your photo could not be restored.");
        }
        return data.status === "done" || data.status === "failed";
      });
    }

    remove.addEventListener("click", async () => {
      if (!window.confirm("Delete this photo and everything made from it? This cannot be undone.")) return;
      remove.disabled = true;
      const answer = await authed(() =>
        api.DELETE("/v1/images/{image_id}", { params: { path: { image_id: params.id } } }),
      );
      remove.disabled = false;
      if (answer.response.status === 204) {
        announce("The photo is deleted.");
        navigate("/history");
      } else {
        message.error(describeProblem(answer.error));
      }
    });
    return () => stop?.();
  },
};
