// Admins: the audit log, newest first, filtered by action, actor and target.
import { api, authed, type Schemas } from "../api";
import { field, formatDate, h, messageBox } from "../dom";
import { describeProblem } from "../problems";
import type { Page } from "../router";

type Entry = Schemas["AuditEntryOut"];

function detailsWords(details: Entry["details"]): string {
  return Object.entries(details)
    .map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join("; ");
}

export const adminAuditPage: Page = {
  title: "Audit log",
  auth: true,
  admin: true,
  async render(root, _params, query) {
    const message = messageBox();
    const action = h("input", { type: "text", name: "action", maxlength: 64, value: query.get("action") ?? "" });
    const actor = h("input", { type: "text", name: "actor_id", maxlength: 64 });
    const target = h("input", { type: "text", name: "target", maxlength: 128, value: query.get("target") ?? "" });
    const filters = h(
      "form",
      { class: "inline-form" },
      field("Action", action, "e.g. user.ban, image.hide"),
      field("Admin (user id)", actor),
      field("Target", target),
      h("button", { type: "submit" }, "Filter"),
    );
    const rows = h("tbody");
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show older entries");
    let cursor: string | null = null;

    const load = async (fresh: boolean) => {
      if (fresh) cursor = null;
      const { data, error } = await authed(() =>
        api.GET("/v1/admin/audit", {
          params: {
            query: {
              limit: 50,
              cursor: cursor ?? undefined,
              action: action.value.trim() || undefined,
              actor_id: actor.value.trim() || undefined,
              target: target.value.trim() || undefined,
            },
          },
        }),
      );
      if (!data) {
        message.error(describeProblem(error));
        return;
      }
      if (fresh) rows.replaceChildren();
      rows.append(
        ...data.items.map((entry) =>
          h(
            "tr",
            { "data-action": entry.action },
            h("td", {}, formatDate(entry.at)),
            h("th", { scope: "row" }, entry.action),
            h("td", { class: "owner" }, entry.actor_id),
            h("td", { class: "owner" }, entry.target),
            h("td", {}, detailsWords(entry.details)),
          ),
        ),
      );
      cursor = data.items.length < 50 ? null : (data.next_cursor ?? null);
      more.hidden = cursor === null;
      if (fresh && data.items.length === 0) message.info("No entries.");
    };
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      message.clear();
      void load(true);
    });
    more.addEventListener("click", () => void load(false));
    const headings = ["When", "Action", "Admin", "Target", "Details"];
    root.append(
      h("h1", { tabindex: -1 }, "Audit log"),
      message.element,
      filters,
      h(
        "div",
        { class: "table-wrap" },
        h("table", {}, h("caption", {}, "What admins did, newest first"), h("thead", {}, h("tr", {}, ...headings.map((text) => h("th", { scope: "col" }, text)))), rows),
      ),
      more,
    );
    await load(true);
  },
};
