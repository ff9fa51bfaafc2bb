// Sign in with a code sent by SMS, or, as a fallback, to a confirmed email address.
import { api } from "../api";
import { field, h, messageBox } from "../dom";
import { describeProblem, isProblem, waitWords } from "../problems";
import { navigate, type Page } from "../router";
import { session } from "../session";

type Channel = "phone" | "email";

const CHANNELS = {
  phone: {
    label: "Mobile number",
    hint: "With the country code, e.g. +49 151 23456789. We'll text you a 6-digit code.",
    input: () => h("input", { type: "tel", name: "phone", autocomplete: "tel", required: true, maxlength: 32 }),
    sentTo: (to: string) => `We sent a code by text message to ${to}.`,
    other: "Sign in with email instead",
  },
  email: {
    label: "Email address",
    hint: "An address you have confirmed in your account. We'll email you a 6-digit code.",
    input: () => h("input", { type: "email", name: "email", autocomplete: "email", required: true, maxlength: 254 }),
    sentTo: (to: string) => `If ${to} belongs to an account, we emailed a code to it.`,
    other: "Sign in with your phone instead",
  },
} as const;

/** Seconds to wait, from the Retry-After header or the problem's retry_after. */
function retryAfter(response: Response, problem: unknown): number {
  const header = Number(response.headers.get("Retry-After"));
  if (Number.isFinite(header) && header > 0) return header;
  return isProblem(problem) && problem.retry_after ? problem.retry_after : 0;
}

/** Disables `button` for `seconds`, counting down in its text; returns a function that stops it. */
function countdown(button: HTMLButtonElement, label: string, seconds: number, note: HTMLElement): () => void {
  let left = seconds;
  button.disabled = true;
  const show = () => {
    button.textContent = `${label} (in ${waitWords(left)})`;
    note.textContent = `You can ask for a new code in ${waitWords(left)}.`;
  };
  show();
  const timer = window.setInterval(() => {
    left -= 1;
    if (left <= 0) {
      window.clearInterval(timer);
      button.disabled = false;
      button.textContent = label;
      note.textContent = "";
    } else if (left < 60 || left % 60 === 0) {
      show();
    } else {
      button.textContent = `${label} (in ${waitWords(left)})`;
    }
  }, 1000);
  return () => window.clearInterval(timer);
}

export const signInPage: Page = {
  title: "Sign in",
  render(root, _params, query) {
    const next = query.get("next") || "/upload";
    let channel: Channel = query.get("with") === "email" ? "email" : "phone";
    const stops: (() => void)[] = [];
    const message = messageBox();
    const body = h("div");
    const ended = session.endedReason();
    root.append(h("h1", { tabindex: -1 }, "Sign in"), message.element, body);
    if (query.get("erased")) message.info("Your account is being erased. Thank you for using the service.");
    else if (ended) message.info(describeProblem({ type: ended, status: 401, title: "", detail: "", instance: "", request_id: "" }));

    const askForm = (focus = true) => {
      const spec = CHANNELS[channel];
      const input = spec.input();
      const send = h("button", { type: "submit" }, "Send code");
      const note = h("p", { class: "hint", "aria-live": "polite" });
      const form = h(
        "form",
        { novalidate: true },
        field(spec.label, input, spec.hint),
        h("div", { class: "actions" }, send),
        note,
      );
      const other = h("button", { type: "button", class: "link-button" }, spec.other);
      other.addEventListener("click", () => {
        channel = channel === "phone" ? "email" : "phone";
        message.clear();
        askForm();
      });
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        message.clear();
        const value = input.value.trim();
        if (!value) {
          message.error(`Please enter your ${spec.label.toLowerCase()}.`);
          input.focus();
          return;
        }
        send.disabled = true;
        const answer =
          channel === "phone"
            ? await api.POST("/v1/auth/otp", { body: { phone: value } }).catch(() => null)
            : await api.POST("/v1/auth/email/otp", { body: { email: value } }).catch(() => null);
        send.disabled = false;
        if (answer?.response.status === 202) {
          const data: { phone?: string; expires_in: number } | undefined = answer.data;
          const to = data?.phone ?? value;
          codeForm(to, spec.sentTo(to), data?.expires_in ?? 300);
          return;
        }
        message.error(describeProblem(answer?.error));
        input.setAttribute("aria-invalid", "true");
        if (answer?.response.status === 429) stops.push(countdown(send, "Send code", retryAfter(answer.response, answer.error), note));
        input.focus();
      });
      body.replaceChildren(form, h("p", {}, other));
      // Not on arrival: a screen reader starts at the top of the page, not inside a form.
      if (focus) input.focus();
    };

    const codeForm = (to: string, sent: string, expiresIn: number) => {
      const input = h("input", {
        type: "text",
        name: "code",
        inputmode: "numeric",
        autocomplete: "one-time-code",
        pattern: "[0-9]{6}",
        maxlength: 6,
        required: true,
      });
      const submit = h("button", { type: "submit" }, "Sign in");
      const resend = h("button", { type: "button", class: "secondary" }, "Send a new code");
      const back = h("button", { type: "button", class: "link-button" }, channel === "phone" ? "Use another number" : "Use another address");
      const note = h("p", { class: "hint", "aria-live": "polite" });
      const form = h(
        "form",
        { novalidate: true },
        field("6-digit code", input, `The code is valid for ${Math.round(expiresIn / 60)} minutes and works once.`),
        h("div", { class: "actions" }, submit, resend),
        note,
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        message.clear();
        const code = input.value.replace(/\s/g, "");
        if (!/^\d{6}$/.test(code)) {
          message.error("The code has 6 digits.");
          input.setAttribute("aria-invalid", "true");
          input.focus();
          return;
        }
        submit.disabled = true;
        const answer =
          channel === "phone"
            ? await api.POST("/v1/auth/otp/verify", { body: { phone: to, code } }).catch(() => null)
            : await api.POST("/v1/auth/email/otp/verify", { body: { email: to, code } }).catch(() => null);
        submit.disabled = false;
        if (answer?.data) {
          session.signedIn(answer.data);
          const me = await api.GET("/v1/me");
          session.setUser(me.data ?? null);
          navigate(next.startsWith("/sign-in") ? "/upload" : next);
          return;
        }
        message.error(describeProblem(answer?.error));
        input.setAttribute("aria-invalid", "true");
        input.select();
        input.focus();
      });
      resend.addEventListener("click", async () => {
        message.clear();
        resend.disabled = true;
        const answer =
          channel === "phone"
            ? await api.POST("/v1/auth/otp", { body: { phone: to } }).catch(() => null)
            : await api.POST("/v1/auth/email/otp", { body: { email: to } }).catch(() => null);
        resend.disabled = false;
        if (answer?.response.status === 202) {
          message.info(`A new code is on its way. ${sent}`);
        } else {
          message.error(describeProblem(answer?.error));
          if (answer?.response.status === 429) {
            stops.push(countdown(resend, "Send a new code", retryAfter(answer.response, answer.error), note));
          }
        }
        input.focus();
      });
      back.addEventListener("click", () => {
        message.clear();
        askForm();
      });
      body.replaceChildren(form, h("p", {}, back));
      message.info(sent);
      input.focus();
    };

    askForm(false);
    return () => stops.forEach((stop) => stop());
  },
};
