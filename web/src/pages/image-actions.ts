// What a person does with one of their photos besides looking: edit its tags, note and
// location; rate the result; report a problem with it (to the admins' moderation queue).
import { api, authed, type Image, type Schemas } from "../api";
import { announce, field, h, id, messageBox } from "../dom";
import { describeProblem } from "../problems";

type Reason = Schemas["ReportRequest"]["reason"];

/** Tags, note and location, saved with a JSON merge-patch; `saved` gets the updated image. */
export function editForm(image: Image, saved: (image: Image) => void): HTMLElement {
  const message = messageBox();
  const tags = h("input", { type: "text", name: "tags", maxlength: 400, value: image.tags.join(", "), autocomplete: "off" });
  const note = h("textarea", { name: "note", maxlength: 500, rows: 2 });
  note.value = image.note;
  const location = h("input", { type: "text", name: "location", maxlength: 100, value: image.location, autocomplete: "off" });
  const save = h("button", { type: "submit" }, "Save changes");
  const form = h(
    "form",
    { novalidate: true, "aria-labelledby": "edit-heading" },
    h("h2", { id: "edit-heading" }, "Tags, note and location"),
    message.element,
    field("Tags", tags, "Separated by commas"),
    field("Note", note),
    field("Location", location),
    h("div", { class: "actions" }, save),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.clear();
    save.disabled = true;
    const patch = {
      tags: tags.value.split(",").map((tag) => tag.trim()).filter(Boolean),
      note: note.value.trim(),
      location: location.value.trim(),
    };
    const answer = await authed(() =>
      api.PATCH("/v1/images/{image_id}", { params: { path: { image_id: image.id } }, body: patch }),
    );
    save.disabled = false;
    if (answer.data) {
      message.info("Saved.");
      announce("Saved.");
      saved(answer.data);
    } else {
      message.error(describeProblem(answer.error));
    }
  });
  return form;
}

const STARS = ["Poor", "Fair", "Good", "Very good", "Excellent"];

/** A rating of 1 to 5 (radio buttons: arrow keys move between them) and an optional comment. */
export function ratingForm(image: Image): HTMLElement {
  const message = messageBox();
  const group = id("rating");
  const radios = STARS.map((words, index) => {
    const radio = h("input", { type: "radio", name: group, value: index + 1, id: `${group}-${index + 1}` });
    if (image.feedback?.rating === index + 1) radio.checked = true;
    return h("span", { class: "choice" }, radio, h("label", { for: radio.id }, `${index + 1}: ${words}`));
  });
  const comment = h("textarea", { name: "comment", maxlength: 2000, rows: 2 });
  comment.value = image.feedback?.comment ?? "";
  const send = h("button", { type: "submit", class: "secondary" }, image.feedback ? "Change my rating" : "Send my rating");
  const form = h(
    "form",
    { novalidate: true, "aria-labelledby": `${group}-heading` },
    h("h2", { id: `${group}-heading` }, "How good is the result?"),
    message.element,
    h("fieldset", { class: "rating" }, h("legend", {}, "Your rating"), ...radios),
    field("Comment (optional)", comment),
    h("div", { class: "actions" }, send),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.clear();
    const chosen = form.querySelector<HTMLInputElement>(`input[name="${group}"]:checked`);
    if (!chosen) {
      message.error("Please choose a rating from 1 to 5.");
      (form.querySelector("input[type=radio]") as HTMLInputElement).focus();
      return;
    }
    send.disabled = true;
    const answer = await authed(() =>
      api.POST("/v1/images/{image_id}/feedback", {
        params: { path: { image_id: image.id } },
        body: { rating: Number(chosen.value), comment: comment.value.trim() },
      }),
    );
    send.disabled = false;
    if (answer.data) {
      message.info(`Thank you: you rated it ${answer.data.rating} of 5.`);
      send.textContent = "Change my rating";
    } else {
      message.error(describeProblem(answer.error));
    }
  });
  return form;
}

const REASONS: [Reason, string][] = [
  ["wrong-person", "The restored face looks like someone else"],
  ["poor-quality", "The result is poor"],
  ["inappropriate", "The picture is inappropriate"],
  ["other", "Something else"],
];

/** Reports the result to the admins' moderation queue. */
export function reportForm(image: Image): HTMLElement {
  const message = messageBox();
  const reason = h("select", { name: "reason" }, ...REASONS.map(([value, words]) => h("option", { value }, words)));
  const note = h("textarea", { name: "note", maxlength: 500, rows: 2 });
  const send = h("button", { type: "submit", class: "secondary" }, "Report to an admin");
  const form = h(
    "form",
    { novalidate: true, "aria-labelledby": "report-heading" },
    h("h2", { id: "report-heading" }, "Report a problem"),
    message.element,
    field("What is wrong", reason),
    field("Details (optional)", note),
    h("div", { class: "actions" }, send),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.clear();
    send.disabled = true;
    const answer = await authed(() =>
      api.POST("/v1/images/{image_id}/report", {
        params: { path: { image_id: image.id } },
        body: { reason: reason.value as Reason, note: note.value.trim() },
      }),
    );
    send.disabled = false;
    if (answer.response.status === 204) message.info("Reported. An admin will look at it.");
    else message.error(describeProblem(answer.error));
  });
  return form;
}
