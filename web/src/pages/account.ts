// A person's data: export everything as a ZIP, delete all photos, erase the account.
import { api, authed, type Schemas } from "../api";
import { announce, field, formatDate, h, messageBox } from "../dom";
import { poll } from "../poll";
import { describeProblem } from "../problems";
import { navigate, type Page } from "../router";
import { session } from "../session";

type Export = Schemas["ExportOut"];

const EXPORT_WORDS: Record<Export["status"], string> = {
  queued: "Waiting to start",
  running: "Being prepared",
  done: "Ready to download",
  failed: "Could not be prepared",
  expired: "Expired",
};

function sizeWords(bytes: number | null | undefined): string {
  if (!bytes) return "";
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

function exportItem(item: Export): HTMLLIElement {
  const progress =
    item.status === "queued" || item.status === "running"
      ? h("progress", {
          max: Math.max(1, item.progress.items_total),
          value: item.progress.items_done,
          "aria-label": `Export of ${formatDate(item.created_at)}`,
        })
      : null;
  const link =
    item.status === "done" && item.download_url
      ? h(
          "a",
          { href: item.download_url, download: `facerestore-export-${item.id}.zip`, class: "button" },
          `Download the ZIP (${sizeWords(item.size_bytes)})`,
        )
      : null;
  return h(
    "li",
    { class: "export", "data-id": item.id, "data-status": item.status },
    h("span", {}, `Asked for ${formatDate(item.created_at)}: `, h("strong", {}, EXPORT_WORDS[item.status])),
    progress,
    link,
    item.download_expires_at && link ? h("span", { class: "hint" }, `The link works until ${formatDate(item.download_expires_at)}.`) : null,
  );
}

/** Adds (or replaces) the address for signing in by email: a code sent there confirms it. */
function emailForm(): HTMLElement {
  const message = messageBox();
  const current = session.user()?.email;
  const address = h("input", { type: "email", name: "email", autocomplete: "email", maxlength: 254 });
  const code = h("input", { type: "text", name: "code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 6 });
  const codeBox = h("div", { hidden: true }, field("Code from the email", code));
  const send = h("button", { type: "submit", class: "secondary" }, "Send a confirmation code");
  let step: "ask" | "confirm" = "ask";
  const form = h(
    "form",
    { novalidate: true, "aria-labelledby": "email-heading" },
    h("h2", { id: "email-heading" }, "Email address for signing in"),
    h("p", {}, current ? `Now: ${current}. You can sign in with a code sent there.` : "None yet. With one, you can sign in when texts don't reach you."),
    message.element,
    field("Email address", address),
    codeBox,
    h("div", { class: "actions" }, send),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.clear();
    send.disabled = true;
    if (step === "ask") {
      const answer = await authed(() => api.POST("/v1/me/email", { body: { email: address.value.trim() } }));
      send.disabled = false;
      if (answer.data) {
        step = "confirm";
        codeBox.hidden = false;
        send.textContent = "Confirm the address";
        message.info(`We emailed a code to ${address.value.trim()}.`);
        code.focus();
      } else {
        message.error(describeProblem(answer.error));
      }
      return;
    }
    const answer = await authed(() =>
      api.POST("/v1/me/email/verify", { body: { email: address.value.trim(), code: code.value.trim() } }),
    );
    send.disabled = false;
    if (answer.data) {
      session.setUser(answer.data);
      message.info(`Confirmed: you can now sign in with a code sent to ${answer.data.email}.`);
      step = "ask";
      codeBox.hidden = true;
      code.value = "";
      send.textContent = "Send a confirmation code";
    } else {
      message.error(describeProblem(answer.error));
    }
  });
  return form;
}

export const accountPage: Page = {
  title: "Your data",
  auth: true,
  async render(root) {
    const message = messageBox();
    const exports = h("ul", { class: "exports", "aria-label": "Your exports, newest first" });
    const makeExport = h("button", { type: "button" }, "Export all my photos as a ZIP");
    const deleteAll = h("button", { type: "button", class: "danger" }, "Delete all my photos");
    const erase = h("button", { type: "button", class: "danger" }, "Erase my account");
    let stop: (() => void) | undefined;

    const listExports = async (): Promise<Export[]> => {
      const { data, error } = await authed(() => api.GET("/v1/exports"));
      if (!data) {
        message.error(describeProblem(error));
        return [];
      }
      exports.replaceChildren(...data.items.map(exportItem));
      return data.items;
    };
    const watch = (items: Export[]) => {
      if (stop || !items.some((item) => item.status === "queued" || item.status === "running")) return;
      stop = poll(async () => {
        const fresh = await listExports();
        const busy = fresh.some((item) => item.status === "queued" || item.status === "running");
        if (!busy) {
          stop = undefined;
          if (fresh[0]?.status === "done") announce("Your export is ready to download.");
        }
        return !busy;
      });
    };

    makeExport.addEventListener("click", async () => {
      message.clear();
      makeExport.disabled = true;
      const answer = await authed(() => api.POST("/v1/exports"));
      makeExport.disabled = false;
      if (!answer.data) {
        message.error(describeProblem(answer.error));
        return;
      }
      message.info("Your export is being prepared. It appears below when it is ready.");
      watch(await listExports());
    });
    deleteAll.addEventListener("click", async () => {
      if (!window.confirm("Delete all your photos and every file made from them? This cannot be undone.")) return;
      message.clear();
      const answer = await authed(() => api.DELETE("/v1/images"));
      if (answer.data) {
        const count = answer.data.deleted;
        message.info(`${count} photo${count === 1 ? " was" : "s were"} deleted.`);
      } else {
        message.error(describeProblem(answer.error));
      }
    });
    erase.addEventListener("click", async () => {
      const typed = window.prompt('This erases your account and everything of yours, for good. Type "erase" to confirm.');
      if (typed?.trim().toLowerCase() !== "erase") {
        message.info("Nothing was erased.");
        return;
      }
      const answer = await authed(() => api.DELETE("/v1/me"));
      if (answer.response.status === 202) {
        session.forget();
        navigate("/sign-in?erased=1");
      } else {
        message.error(describeProblem(answer.error));
      }
    });

    root.append(
      h("h1", { tabindex: -1 }, "Your data"),
      message.element,
      emailForm(),
      h("h2", {}, "Export"),
      h("p", {}, "A ZIP with every photo, its restored version and what you wrote about it, prepared in the background."),
      h("p", { class: "actions" }, makeExport),
      exports,
      h("h2", {}, "Delete"),
      h("p", {}, "Delete every photo you uploaded and everything made from it. Your account stays."),
      h("p", { class: "actions" }, deleteAll),
      h("h2", {}, "Erase your account"),
      h("p", {}, "Your account, photos, faces, ratings, exports and sessions are erased. You are signed out at once."),
      h("p", { class: "actions" }, erase),
    );
    watch(await listExports());
    return () => stop?.();
  },
};
