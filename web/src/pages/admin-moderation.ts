// Admins: the moderation queue (images reported by their owners or rated poorly), with hide,
// show and dismiss, each with a reason (recorded in the audit log).
import { api, authed, type Schemas } from "../api";
import { announce, field, formatDate, h, messageBox } from "../dom";
import { describeProblem } from "../problems";
import type { Page } from "../router";
import { thumbnail } from "./history";

type Case = Schemas["ModerationCaseOut"];
type Status = "open" | "resolved" | "all";

const REASON_WORDS: Record<string, string> = {
  "wrong-person": "looks like someone else",
  "poor-quality": "poor result",
  inappropriate: "inappropriate",
  other: "other",
};

function summary(item: Case): string {
  const reasons = Object.entries(item.report_reasons)
    .map(([reason, count]) => `${REASON_WORDS[reason] ?? reason}: ${count}`)
    .join(", ");
  const parts = [];
  if (item.reports) parts.push(`${item.reports} report${item.reports === 1 ? "" : "s"}${reasons ? ` (${reasons})` : ""}`);
  if (item.low_ratings) parts.push(`${item.low_ratings} low rating${item.low_ratings === 1 ? "" : "s"} (lowest ${item.lowest_rating ?? "?"} of 5)`);
  return parts.join("; ") || "No reports";
}

export const adminModerationPage: Page = {
  title: "Moderation",
  auth: true,
  admin: true,
  async render(root) {
    const message = messageBox();
    const status = h(
      "select",
      { name: "status" },
      h("option", { value: "open" }, "Open cases"),
      h("option", { value: "resolved" }, "Resolved cases"),
      h("option", { value: "all" }, "All cases"),
    );
    const list = h("ul", { class: "cases", "aria-label": "Moderation cases" });
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show more cases");
    let cursor: string | null = null;

    const act = async (item: Case, action: "hide" | "show" | "dismiss", reason: string): Promise<boolean> => {
      const path = { params: { path: { image_id: item.image_id } }, body: { reason } };
      const answer =
        action === "hide"
          ? await authed(() => api.POST("/v1/admin/images/{image_id}/hide", path))
          : action === "show"
            ? await authed(() => api.POST("/v1/admin/images/{image_id}/show", path))
            : await authed(() => api.POST("/v1/admin/moderation/{image_id}/dismiss", path));
      if (answer.response.status === 204 || answer.response.status === 200) return true;
      message.error(describeProblem(answer.error));
      return false;
    };

    const card = (item: Case): HTMLLIElement => {
      const reason = h("input", { type: "text", maxlength: 500, "aria-label": `Reason for the decision on image ${item.image_id}` });
      const buttons = (
        [
          ["hide", "Hide", item.hidden],
          ["show", "Show again", !item.hidden],
          ["dismiss", "Dismiss", item.status === "resolved"],
        ] as const
      ).map(([action, label, skip]) =>
        skip ? null : h("button", { type: "button", class: action === "hide" ? "danger" : "secondary", "data-action": action }, label),
      );
      const element = h(
        "li",
        { class: "case card", "data-id": item.image_id, "data-status": item.status, "data-hidden": String(item.hidden) },
        item.image ? thumbnail(item.image) : h("div", { class: "thumb-placeholder" }, "Image deleted"),
        h(
          "span",
          { class: "caption" },
          h("strong", {}, item.status === "open" ? "Open" : `Resolved${item.resolution ? `: ${item.resolution}` : ""}`),
          h("span", {}, summary(item)),
          h("span", {}, item.hidden ? "Hidden from its owner's history" : "Visible"),
          h("span", { class: "owner" }, `User ${item.user_id} · opened ${formatDate(item.opened_at)}`),
          item.resolution_reason ? h("span", { class: "hint" }, `Reason: ${item.resolution_reason}`) : null,
        ),
        h("span", { class: "row-actions" }, reason, ...buttons),
      );
      element.querySelectorAll<HTMLButtonElement>("button[data-action]").forEach((button) => {
        button.addEventListener("click", async () => {
          message.clear();
          button.disabled = true;
          const action = button.dataset.action as "hide" | "show" | "dismiss";
          if (await act(item, action, reason.value.trim())) {
            announce({ hide: "Hidden.", show: "Shown again.", dismiss: "Dismissed." }[action]);
            await load(true);
          } else {
            button.disabled = false;
          }
        });
      });
      return element;
    };

    const load = async (fresh: boolean) => {
      if (fresh) cursor = null;
      const { data, error } = await authed(() =>
        api.GET("/v1/admin/moderation", {
          params: { query: { status: status.value as Status, limit: 20, cursor: cursor ?? undefined } },
        }),
      );
      if (!data) {
        message.error(describeProblem(error));
        return;
      }
      if (fresh) list.replaceChildren();
      list.append(...data.items.map(card));
      cursor = data.items.length < 20 ? null : (data.next_cursor ?? null);
      more.hidden = cursor === null;
      if (fresh && data.items.length === 0) list.append(h("li", {}, "No cases."));
    };
    status.addEventListener("change", () => void load(true));
    more.addEventListener("click", () => void load(false));
    root.append(
      h("h1", { tabindex: -1 }, "Moderation"),
      h("p", {}, "Photos their owners reported, or rated poorly. Hiding takes a photo out of its owner's history and search."),
      message.element,
      h("div", { class: "inline-form" }, field("Show", status)),
      list,
      more,
    );
    await load(true);
  },
};
