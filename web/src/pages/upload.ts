// Upload a photo: checked here first (type, size), sent with a progress bar, then followed live.
import { authed, type Image } from "../api";
import { announce, field, h, messageBox } from "../dom";
import { checkPhoto, sendForm } from "../photo";
import { describeProblem, isProblem, reasonOf, waitWords } from "../problems";
import { navigate, type Page } from "../router";

export const uploadPage: Page = {
  title: "Restore a photo",
  auth: true,
  render(root) {
    const message = messageBox();
    const file = h("input", { type: "file", name: "file", accept: "image/jpeg,image/png", required: true });
    const preview = h("img", { class: "preview", alt: "", hidden: true });
    const tags = h("input", { type: "text", name: "tags", maxlength: 400, autocomplete: "off" });
    const note = h("textarea", { name: "note", maxlength: 500, rows: 2 });
    const location = h("input", { type: "text", name: "location", maxlength: 100, autocomplete: "off" });
    const progress = h("progress", { max: 100, value: 0, id: "upload-progress" });
    const progressBox = h("div", { class: "field", hidden: true }, h("label", { for: "upload-progress" }, "Uploading"), progress);
    const submit = h("button", { type: "submit" }, "Upload and restore");
    let previewUrl = "";
    let ok = false;

    const check = async (): Promise<boolean> => {
      message.clear();
      file.removeAttribute("aria-invalid");
      preview.hidden = true;
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = "";
      const chosen = file.files?.[0];
      if (!chosen) return false;
      const problem = await checkPhoto(chosen);
      if (problem) {
        message.error(problem);
        file.setAttribute("aria-invalid", "true");
        return false;
      }
      previewUrl = URL.createObjectURL(chosen);
      preview.src = previewUrl;
      preview.alt = `Preview of ${chosen.name}`;
      preview.hidden = false;
      return true;
    };
    file.addEventListener("change", async () => {
      ok = await check();
    });

    const form = h(
      "form",
      { novalidate: true },
      field("Photo", file, "A JPEG or PNG photo with a face, at most 1 MB."),
      preview,
      field("Tags (optional)", tags, "Separated by commas, e.g. family, 1970s"),
      field("Note (optional)", note),
      field("Location (optional)", location),
      progressBox,
      h("div", { class: "actions" }, submit),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const chosen = file.files?.[0];
      if (!chosen) {
        message.error("Please choose a photo first.");
        file.focus();
        return;
      }
      if (!ok && !(ok = await check())) {
        file.focus();
        return;
      }
      const body = new FormData();
      body.append("file", chosen, chosen.name);
      for (const [name, input] of [["tags", tags], ["note", note], ["location", location]] as const) {
        if (input.value.trim()) body.append(name, input.value.trim());
      }
      submit.disabled = true;
      progressBox.hidden = false;
      progress.value = 0;
      const answer = await authed(() =>
        sendForm<Image>("/v1/images", body, (sent) => {
          progress.value = Math.round(sent * 100);
        }),
      );
      submit.disabled = false;
      if (answer.data) {
        progress.value = 100;
        announce("Uploaded. Restoring now.");
        navigate(`/images/${encodeURIComponent(answer.data.id)}?new=1`);
        return;
      }
      progressBox.hidden = true;
      if (reasonOf(answer.error) === "rate-limited" && isProblem(answer.error) && answer.error.limit === "uploads-per-user") {
        const wait = answer.error.retry_after ? ` You can upload again in ${waitWords(answer.error.retry_after)}.` : "";
        message.error(`You have reached the hourly upload limit.${wait}`);
      } else {
        message.error(describeProblem(answer.error));
      }
    });
    root.append(
      h("h1", { tabindex: -1 }, "Restore a photo"),
      h("p", {}, "Upload a photo of a face. It is restored in a few seconds and kept in ", h("a", { href: "#/history" }, "your photos"), "."),
      message.element,
      form,
    );
    return () => {
      if (previewUrl) URL.revokeObjectURL(previewUrl);
    };
  },
};
