// Admins: one user and their activity (sign-ins, uploads, versions requested, searches, reports, bans), newest first.
import { api, authed } from "../api";
import { formatDate, h, messageBox } from "../dom";
import { describeProblem } from "../problems";
import type { Page } from "../router";

export const adminUserPage: Page = {
  title: "User",
  auth: true,
  admin: true,
  async render(root, params) {
    const message = messageBox();
    const heading = h("h1", { tabindex: -1 }, "User");
    const rows = h("tbody");
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show older activity");
    const summary = h("div");
    let cursor: string | null = null;
    root.append(heading, message.element, summary);

    const load = async (first: boolean) => {
      const { data, error } = await authed(() =>
        api.GET("/v1/admin/users/{user_id}", {
          params: { path: { user_id: params.id }, query: { limit: 50, cursor: cursor ?? undefined } },
        }),
      );
      if (!data) {
        message.error(describeProblem(error));
        return;
      }
      if (first) {
        const user = data.user;
        heading.textContent = `User ${user.phone}`;
        const counts = Object.entries(data.activity_counts).sort(([a], [b]) => a.localeCompare(b));
        summary.replaceChildren(
          h(
            "dl",
            { class: "details" },
            h("dt", {}, "Role"),
            h("dd", {}, user.role === "admin" ? "Admin" : "User"),
            h("dt", {}, "Status"),
            h("dd", {}, user.banned ? "Banned" : "Active"),
            h("dt", {}, "Email"),
            h("dd", {}, user.email ?? "none"),
            h("dt", {}, "Signed up"),
            h("dd", {}, formatDate(user.created_at)),
            h("dt", {}, "Last sign-in"),
            h("dd", {}, formatDate(user.last_login_at)),
            ...counts.flatMap(([kind, count]) => [h("dt", {}, kind), h("dd", {}, String(count))]),
          ),
          h("p", {}, h("a", { href: `#/admin/images?user=${encodeURIComponent(user.id)}` }, "Their images")),
        );
      }
      rows.append(
        ...data.activity.map((entry) =>
          h(
            "tr",
            { "data-kind": entry.kind },
            h("td", {}, formatDate(entry.at)),
            h("th", { scope: "row" }, entry.kind),
            h("td", {}, Object.entries(entry.details).map(([key, value]) => `${key}: ${value}`).join("; ")),
          ),
        ),
      );
      cursor = data.activity.length < 50 ? null : (data.next_cursor ?? null);
      more.hidden = cursor === null;
    };
    more.addEventListener("click", () => void load(false));
    root.append(
      h("h2", {}, "Activity"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", {}, "Newest first"),
          h("thead", {}, h("tr", {}, ...["When", "What", "Details"].map((text) => h("th", { scope: "col" }, text)))),
          rows,
        ),
      ),
      more,
    );
    await load(true);
  },
};
