// Admins: everyone's images, newest first; delete one with a reason (recorded in the audit log).
import { api, authed, type Schemas } from "../api";
import { announce, field, formatDate, h, messageBox } from "../dom";
import { describeProblem } from "../problems";
import { STATUS_WORDS } from "../quality";
import type { Page } from "../router";
import { thumbnail } from "./history";

type AdminImage = Schemas["AdminImageOut"];

export const adminImagesPage: Page = {
  title: "All images",
  auth: true,
  admin: true,
  async render(root, _params, query) {
    const message = messageBox();
    const grid = h("ul", { class: "grid admin-grid", "aria-label": "Everyone's images, newest first" });
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show older images");
    const owner = h("input", { type: "text", name: "user_id", maxlength: 64, value: query.get("user") ?? "" });
    const filter = h("form", { class: "inline-form" }, field("Only the images of user (id)", owner), h("button", { type: "submit" }, "Show their images"));
    let cursor: string | null = null;

    const card = (image: AdminImage): HTMLLIElement => {
      const reason = h("input", { type: "text", maxlength: 500, "aria-label": "Reason for deleting this image" });
      const remove = h("button", { type: "button", class: "danger" }, "Delete");
      const item = h(
        "li",
        { class: "card", "data-id": image.id },
        thumbnail(image),
        h(
          "span",
          { class: "caption" },
          h("span", { class: `status status-${image.status}` }, STATUS_WORDS[image.status]),
          h("span", {}, formatDate(image.created_at)),
          h("span", { class: "owner" }, `User ${image.user_id}`),
        ),
        h("span", { class: "row-actions" }, reason, remove),
      );
      remove.addEventListener("click", async () => {
        if (!window.confirm("Delete this image for its owner too? The reason goes to the audit log.")) return;
        message.clear();
        remove.disabled = true;
        const answer = await authed(() =>
          api.DELETE("/v1/admin/images/{image_id}", {
            params: { path: { image_id: image.id }, query: { reason: reason.value.trim() || undefined } },
          }),
        );
        remove.disabled = false;
        if (answer.response.status === 204) {
          item.remove();
          announce("The image is deleted.");
        } else {
          message.error(describeProblem(answer.error));
        }
      });
      return item;
    };

    const load = async (fresh: boolean) => {
      if (fresh) {
        cursor = null;
        grid.replaceChildren();
      }
      const { data, error } = await authed(() =>
        api.GET("/v1/admin/images", {
          params: { query: { limit: 24, cursor: cursor ?? undefined, user_id: owner.value.trim() || undefined } },
        }),
      );
      if (!data) {
        message.error(describeProblem(error));
        return;
      }
      grid.append(...data.items.map(card));
      cursor = data.items.length < 24 ? null : (data.next_cursor ?? null);
      more.hidden = cursor === null;
      if (fresh && data.items.length === 0) message.info("No images.");
    };
    filter.addEventListener("submit", (event) => {
      event.preventDefault();
      message.clear();
      void load(true);
    });
    more.addEventListener("click", () => void load(false));
    root.append(h("h1", { tabindex: -1 }, "All images"), message.element, filter, grid, more);
    await load(true);
  },
};
