// Similar-face search: with a photo (never stored) or a face of one of the person's photos,
// with filters; matches best first with their similarity.
import { api, authed, type Image, type Schemas } from "../api";
import { field, formatDate, h, messageBox } from "../dom";
import { checkPhoto, sendForm } from "../photo";
import { describeProblem } from "../problems";
import type { Page } from "../router";
import { session } from "../session";

type Result = Schemas["SearchResult"];
type Match = Schemas["FaceMatchOut"];

function percent(score: number): string {
  return `${Math.round(score * 100)}% similar`;
}

function matchCard(match: Match, own: boolean): HTMLLIElement {
  const when = formatDate(match.created_at);
  const picture = match.thumbnail_url
    ? h("img", { src: match.thumbnail_url, alt: `Photo from ${when}`, loading: "lazy", width: 160, height: 160 })
    : h("div", { class: "thumb-placeholder", "aria-hidden": "true" }, "No picture");
  const caption = h(
    "span",
    { class: "caption" },
    h("strong", { class: "score" }, percent(match.score)),
    h("span", {}, `${when} · face ${match.face_index + 1}`),
    match.tags.length ? h("span", { class: "tags" }, match.tags.join(", ")) : null,
    match.location ? h("span", {}, match.location) : null,
    match.user_id ? h("span", { class: "owner" }, `Owner ${match.user_id}`) : null,
  );
  const inner = own ? h("a", { href: `#/images/${encodeURIComponent(match.image_id)}` }, picture, caption) : h("div", {}, picture, caption);
  return h("li", { class: "card", "data-image": match.image_id, "data-face": match.face_index, "data-score": match.score.toFixed(3) }, inner);
}

function dateStart(value: string): string | undefined {
  return value ? new Date(`${value}T00:00:00`).toISOString() : undefined;
}

function dateEnd(value: string): string | undefined {
  return value ? new Date(`${value}T23:59:59.999`).toISOString() : undefined;
}

export const searchPage: Page = {
  title: "Find similar faces",
  auth: true,
  async render(root, _params, query) {
    const message = messageBox();
    const byPhoto = h("input", { type: "radio", name: "source", value: "photo", id: "source-photo" });
    const byFace = h("input", { type: "radio", name: "source", value: "face", id: "source-face" });
    const file = h("input", { type: "file", name: "file", accept: "image/jpeg,image/png" });
    const imageSelect = h("select", { name: "image_id" });
    const faceNumber = h("input", { type: "number", name: "face", min: 1, max: 100, value: 1 });
    const topK = h("input", { type: "number", name: "top_k", min: 1, max: 50, value: 10 });
    const minScore = h("input", { type: "number", name: "min_score", min: 0, max: 100, value: 0 });
    const from = h("input", { type: "date", name: "from" });
    const to = h("input", { type: "date", name: "to" });
    const location = h("input", { type: "text", name: "location", maxlength: 100 });
    const tags = h("input", { type: "text", name: "tag", maxlength: 400 });
    const everyone = h("input", { type: "checkbox", name: "scope", id: "scope-all" });
    const submit = h("button", { type: "submit" }, "Search");
    const summary = h("p", { role: "status", "aria-live": "polite" });
    const results = h("ol", { class: "grid", "aria-label": "Matches, most similar first" });

    const photoBox = h("div", {}, field("Photo", file, "JPEG or PNG, at most 1 MB. It is only compared, never stored."));
    const faceBox = h("div", {}, field("Your photo", imageSelect), field("Face number", faceNumber, "1 is the leftmost face."));
    const sourceChanged = () => {
      photoBox.hidden = !byPhoto.checked;
      faceBox.hidden = !byFace.checked;
    };
    byPhoto.addEventListener("change", sourceChanged);
    byFace.addEventListener("change", sourceChanged);

    const form = h(
      "form",
      { novalidate: true },
      h(
        "fieldset",
        {},
        h("legend", {}, "Search with"),
        h("div", { class: "choice" }, byPhoto, h("label", { for: "source-photo" }, "A photo")),
        h("div", { class: "choice" }, byFace, h("label", { for: "source-face" }, "A face from your photos")),
        photoBox,
        faceBox,
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Filters"),
        h(
          "div",
          { class: "filters" },
          field("How many matches", topK),
          field("Lowest similarity (%)", minScore),
          field("Uploaded from", from),
          field("Uploaded until", to),
          field("Location", location),
          field("Tags", tags, "Any of these, separated by commas"),
        ),
        session.isAdmin()
          ? h("div", { class: "choice" }, everyone, h("label", { for: "scope-all" }, "Search everyone's photos (recorded in the audit log)"))
          : null,
      ),
      h("div", { class: "actions" }, submit),
    );
    root.append(h("h1", { tabindex: -1 }, "Find similar faces"), message.element, form, summary, results);

    // The person's restored photos, for searching with a face they already have.
    const { data: mine } = await authed(() => api.GET("/v1/images", { params: { query: { limit: 100 } } }));
    const done = (mine?.items ?? []).filter((image: Image) => image.status === "done" && (image.faces ?? 0) > 0);
    imageSelect.append(
      ...done.map((image) =>
        h("option", { value: image.id }, `${formatDate(image.created_at)}${image.tags.length ? ` (${image.tags.join(", ")})` : ""} · ${image.faces} face${image.faces === 1 ? "" : "s"}`),
      ),
    );
    const wanted = query.get("image");
    if (wanted && done.some((image) => image.id === wanted)) {
      imageSelect.value = wanted;
      faceNumber.value = String(Number(query.get("face") ?? 0) + 1);
      byFace.checked = true;
    } else {
      byPhoto.checked = true;
    }
    byFace.disabled = done.length === 0;
    sourceChanged();

    const filters = () => {
      const tagList = tags.value.split(",").map((tag) => tag.trim()).filter(Boolean);
      return {
        top_k: Number(topK.value) || 10,
        min_score: Math.min(1, Math.max(0, Number(minScore.value) / 100 || 0)),
        from: dateStart(from.value) ?? null,
        to: dateEnd(to.value) ?? null,
        location: location.value.trim() || null,
        tag: tagList,
        scope: everyone.checked ? ("all" as const) : ("own" as const),
      };
    };

    const show = (result: Result, scope: "own" | "all") => {
      const used = result.query_faces.find((face) => face.used);
      const faces = result.query_faces.length;
      const found = result.matches.length;
      summary.textContent =
        `${found === 0 ? "No matches" : `${found} match${found === 1 ? "" : "es"}`}` +
        (faces > 1 && used ? `, searched with face ${used.index + 1} of the ${faces} in the photo.` : ".");
      results.replaceChildren(...result.matches.map((match) => matchCard(match, scope === "own")));
    };

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.clear();
      const options = filters();
      submit.disabled = true;
      try {
        if (byPhoto.checked) {
          const chosen = file.files?.[0];
          const problem = chosen ? await checkPhoto(chosen) : "Please choose a photo first.";
          if (problem || !chosen) {
            message.error(problem ?? "Please choose a photo first.");
            file.focus();
            return;
          }
          const body = new FormData();
          body.append("file", chosen, chosen.name);
          for (const [name, value] of Object.entries(options)) {
            if (Array.isArray(value)) value.forEach((item) => body.append(name, item));
            else if (value !== null) body.append(name, String(value));
          }
          const answer = await authed(() => sendForm<Result>("/v1/search", body, () => undefined));
          if (answer.data) show(answer.data, options.scope);
          else message.error(describeProblem(answer.error));
        } else {
          const answer = await authed(() =>
            api.POST("/v1/search", {
              body: { ...options, image_id: imageSelect.value, face_index: Math.max(0, Number(faceNumber.value) - 1) },
            }),
          );
          if (answer.data) show(answer.data, options.scope);
          else message.error(describeProblem(answer.error));
        }
      } finally {
        submit.disabled = false;
      }
    });
    if (byFace.checked) form.requestSubmit();
  },
};
