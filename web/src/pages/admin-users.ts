// Admins: every user, or the one with a phone number, with ban and lift-ban (each recorded in the audit log).
import { api, authed, type User } from "../api";
import { announce, field, formatDate, h, messageBox } from "../dom";
import { describeProblem } from "../problems";
import type { Page } from "../router";

export const adminUsersPage: Page = {
  title: "Users",
  auth: true,
  admin: true,
  async render(root) {
    const message = messageBox();
    const rows = h("tbody");
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show more users");
    let cursor: string | null = null;
    const phone = h("input", { type: "tel", name: "phone", maxlength: 32, autocomplete: "off" });
    const search = h(
      "form",
      { class: "inline-form", role: "search" },
      field("Phone number", phone, "In any format, e.g. +49 151 2345 6789; empty for everyone"),
      h("button", { type: "submit" }, "Find"),
    );

    const row = (user: User): HTMLTableRowElement => {
      const reason = h("input", { type: "text", maxlength: 500, "aria-label": `Reason for banning ${user.phone}` });
      const action = user.banned
        ? h("button", { type: "button", class: "secondary" }, "Lift ban")
        : h("button", { type: "button", class: "danger" }, "Ban");
      action.setAttribute("aria-label", `${user.banned ? "Lift the ban on" : "Ban"} ${user.phone}`);
      action.addEventListener("click", async () => {
        message.clear();
        action.disabled = true;
        const path = { params: { path: { user_id: user.id } } };
        const answer = user.banned
          ? await authed(() => api.DELETE("/v1/admin/users/{user_id}/ban", path))
          : await authed(() => api.POST("/v1/admin/users/{user_id}/ban", { ...path, body: { reason: reason.value.trim() } }));
        action.disabled = false;
        if (answer.data) {
          const fresh = row(answer.data);
          tr.replaceWith(fresh);
          announce(`${answer.data.phone} is ${answer.data.banned ? "banned" : "no longer banned"}.`);
          (fresh.querySelector("button") as HTMLButtonElement).focus();
        } else {
          message.error(describeProblem(answer.error));
        }
      });
      const tr = h(
        "tr",
        { "data-id": user.id },
        h("th", { scope: "row" }, h("a", { href: `#/admin/users/${encodeURIComponent(user.id)}` }, user.phone)),
        h("td", {}, user.role === "admin" ? "Admin" : "User"),
        h("td", {}, user.email ?? ""),
        h("td", {}, formatDate(user.created_at)),
        h("td", {}, formatDate(user.last_login_at)),
        h("td", {}, user.banned ? "Banned" : "Active"),
        h("td", { class: "row-actions" }, user.banned ? null : reason, action),
      );
      return tr;
    };

    const load = async (fresh: boolean) => {
      if (fresh) cursor = null;
      const wanted = phone.value.trim() || undefined;
      const { data, error } = await authed(() =>
        api.GET("/v1/admin/users", { params: { query: { limit: 50, cursor: cursor ?? undefined, phone: wanted } } }),
      );
      if (!data) {
        message.error(describeProblem(error));
        return;
      }
      if (fresh) rows.replaceChildren();
      rows.append(...data.items.map(row));
      cursor = data.items.length < 50 ? null : (data.next_cursor ?? null);
      more.hidden = cursor === null;
      if (fresh && wanted && data.items.length === 0) message.info("No user has this phone number.");
    };
    search.addEventListener("submit", (event) => {
      event.preventDefault();
      message.clear();
      void load(true);
    });
    more.addEventListener("click", () => void load(false));

    const headings = ["Phone", "Role", "Email", "Signed up", "Last sign-in", "Status", "Action"];
    root.append(
      h("h1", { tabindex: -1 }, "Users"),
      h("p", {}, "A ban ends the user's sessions at once; they cannot sign in until the ban is lifted."),
      message.element,
      search,
      h(
        "div",
        { class: "table-wrap" },
        h("table", {}, h("caption", {}, "All users"), h("thead", {}, h("tr", {}, ...headings.map((text) => h("th", { scope: "col" }, text)))), rows),
      ),
      more,
    );
    await load(true);
  },
};
