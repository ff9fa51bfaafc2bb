import "./styles.css";
import { api, authed } from "./api";
import { h } from "./dom";
import { currentPath, navigate, route, setFallback, startRouter } from "./router";
import { session } from "./session";
import { signInPage } from "./pages/signin";
import { uploadPage } from "./pages/upload";
import { historyPage } from "./pages/history";
import { imagePage } from "./pages/image";
import { searchPage } from "./pages/search";
import { adminUsersPage } from "./pages/admin-users";
import { adminImagesPage } from "./pages/admin-images";
import { adminStatsPage } from "./pages/admin-stats";
import { accountPage } from "./pages/account";
import { adminModerationPage } from "./pages/admin-moderation";
import { adminAuditPage } from "./pages/admin-audit";
import { adminUserPage } from "./pages/admin-user";

route("/sign-in", signInPage);
route("/upload", uploadPage);
route("/history", historyPage);
route("/images/:id", imagePage);
route("/search", searchPage);
route("/account", accountPage);
route("/admin/users", adminUsersPage);
route("/admin/users/:id", adminUserPage);
route("/admin/images", adminImagesPage);
route("/admin/stats", adminStatsPage);
route("/admin/moderation", adminModerationPage);
route("/admin/audit", adminAuditPage);
route("/", {
  title: "Home",
  render() {
    navigate(session.accessToken() ? "/upload" : "/sign-in");
  },
});
setFallback("/");

function link(path: string, text: string): HTMLAnchorElement {
  const current = currentPath().split("?")[0] === path;
  return h("a", { href: `#${path}`, "aria-current": current ? "page" : false }, text);
}

function renderNav(): void {
  const nav = document.getElementById("nav") as HTMLElement;
  const user = session.user();
  if (!session.accessToken() || !user) {
    nav.replaceChildren(h("ul", {}, h("li", {}, link("/sign-in", "Sign in"))));
    return;
  }
  const items = [
    link("/upload", "Upload"),
    link("/history", "Your photos"),
    link("/search", "Find similar faces"),
    link("/account", "Your data"),
  ];
  if (session.isAdmin()) {
    items.push(
      link("/admin/users", "Users"),
      link("/admin/images", "All images"),
      link("/admin/moderation", "Moderation"),
      link("/admin/audit", "Audit log"),
      link("/admin/stats", "Statistics"),
    );
  }
  const signOut = h("button", { type: "button", class: "link-button", onclick: () => void logout() }, "Sign out");
  nav.replaceChildren(h("ul", {}, ...items.map((item) => h("li", {}, item)), h("li", {}, signOut)));
}

async function logout(): Promise<void> {
  await api.POST("/v1/auth/logout").catch(() => undefined);
  session.forget();
  navigate("/sign-in");
}

async function loadUser(): Promise<void> {
  if (!(await session.ready())) return;
  const { data } = await authed(() => api.GET("/v1/me"));
  if (data) session.setUser(data);
}

document.querySelector(".skip-link")?.addEventListener("click", (event) => {
  event.preventDefault();
  (document.getElementById("main") as HTMLElement).focus();
});
session.onChange(() => {
  renderNav();
  // A session that ended (signed out elsewhere, banned, expired) leads back to sign-in.
  if (!session.accessToken() && session.endedReason() && !currentPath().startsWith("/sign-in")) {
    navigate(`/sign-in?next=${encodeURIComponent(currentPath())}`);
  }
});
window.addEventListener("routechange", renderNav);

session.start();
void loadUser().finally(() => {
  renderNav();
  startRouter();
});
