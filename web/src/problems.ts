// RFC 9457 problem details from the API, put into words a person can act on.
import type { Schemas } from "./api";

export type Problem = Schemas["ProblemDetails"];

export function isProblem(value: unknown): value is Problem {
  return typeof value === "object" && value !== null && "type" in value && "status" in value;
}

/** The stable reason at the end of a problem's type, e.g. "invalid-code". */
export function reasonOf(value: unknown): string {
  return isProblem(value) ? value.type.slice(value.type.lastIndexOf("/") + 1) : "";
}

export function waitWords(seconds: number): string {
  if (seconds < 60) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes === 1 ? "" : "s"}`;
}

const WORDS: Record<string, string> = {
  "invalid-phone": "That doesn't look like a mobile number. Write it with the country code, e.g. +49 151 23456789.",
  "phone-region-not-allowed": "We can't send codes to numbers in that country.",
  "invalid-email": "That doesn't look like an email address.",
  "invalid-code": "That code is wrong, already used or expired. Check the message, or ask for a new code.",
  "sms-unavailable": "We couldn't send the text message just now. Please try again in a few minutes.",
  "email-unavailable": "We couldn't send the email just now. Please try again in a few minutes.",
  "token-expired": "Your session expired. Please sign in again.",
  "session-revoked": "Your session has ended. Please sign in again.",
  "invalid-token": "Your session is not valid any more. Please sign in again.",
  "invalid-refresh-token": "Your session has ended. Please sign in again.",
  unauthenticated: "Please sign in first.",
  "account-suspended": "This account is suspended. Contact support if you think this is a mistake.",
  forbidden: "This needs an administrator account.",
  "not-found": "It isn't there any more: deleted, or never yours.",
  "face-not-found": "That face isn't among the photos you may search.",
  "payload-too-large": "The photo is larger than 1 MB. Please choose a smaller one.",
  "unsupported-media-type": "That file is not a JPEG or PNG photo.",
  "undecodable-image": "That file could not be read as a photo.",
  "image-too-small": "The photo is too small. Please choose one at least a few hundred pixels wide.",
  "image-too-large": "The photo has too many pixels. Please choose a smaller one.",
  "no-face-found": "No face was found in that photo.",
  "embedder-unavailable": "Face search is busy or unavailable right now. Please try again shortly.",
  "email-taken": "That address already belongs to another account.",
  "service-unavailable": "Part of the service is unavailable. Please try again shortly.",
  internal: "Something went wrong on our side. Please try again.",
};

// A field the API found wrong, in words (validation-error names the fields).
const FIELD_WORDS: Record<string, string> = {
  phone: WORDS["invalid-phone"],
  email: WORDS["invalid-email"],
  code: "The code has 6 digits.",
  file: "Please choose a JPEG or PNG photo.",
  tags: "Tags are up to 10 words of letters and digits, separated by commas.",
  note: "The note can be at most 500 characters.",
  location: "The location can be at most 100 characters.",
};

/** Words for a failed call: a problem from the API, or no answer at all. */
export function describeProblem(value: unknown): string {
  if (!isProblem(value)) {
    return "We can't reach the service. Check your connection and try again.";
  }
  const reason = reasonOf(value);
  if (reason === "rate-limited") {
    const wait = value.retry_after ? ` You can try again in ${waitWords(value.retry_after)}.` : " Please wait a moment.";
    return `Too many attempts.${wait}`;
  }
  if (reason === "validation-error") {
    const where = [...new Set((value.errors ?? []).map((error) => String(error.loc[error.loc.length - 1])))];
    const words = where.map((name) => FIELD_WORDS[name]).filter(Boolean);
    if (words.length && words.length === where.length) return words.join(" ");
    return where.length ? `Please check: ${where.join(", ")}.` : "Please check what you entered.";
  }
  return WORDS[reason] ?? (value.detail || value.title);
}
