// Where the tokens live, and why:
// - The access token (15 minutes) is kept in memory only: no storage that another script,
//   an extension or a later visitor of this browser profile could read it from.
// - The refresh token (rotated on every use) is kept in memory too while the page is open.
//   Only across a reload is it parked in sessionStorage: written when the page is hidden
//   (pagehide) and taken out again as soon as the page starts. sessionStorage belongs to this
//   tab and dies with it; taking it out at once means a duplicated tab never shares the same
//   rotating token (using a spent token twice ends the session for both, by design).
// - Not localStorage (outlives the tab, shared by every tab); not a cookie (the API takes bearer
//   tokens from every client; a cookie would need its own endpoint and CSRF defences).
// The page's strict Content-Security-Policy (only this origin's scripts) is the defence that
// keeps foreign code from reading memory in the first place.
import { isProblem, reasonOf } from "./problems";
import type { components } from "@sdk/schema";

type Tokens = components["schemas"]["TokenResponse"];
type User = components["schemas"]["UserOut"];

const PARKED = "facerestore.refresh";
// Refresh this long before the access token expires.
const EARLY_SECONDS = 60;

let access: string | null = null;
let refreshToken: string | null = null;
let me: User | null = null;
let timer: number | undefined;
let inflight: Promise<boolean> | null = null;
let endedReason = "";
const listeners = new Set<() => void>();

function changed(): void {
  for (const listener of listeners) listener();
}

function unpark(): void {
  const parked = sessionStorage.getItem(PARKED);
  sessionStorage.removeItem(PARKED);
  if (parked && !refreshToken) refreshToken = parked;
}

function park(): void {
  if (refreshToken) sessionStorage.setItem(PARKED, refreshToken);
}

function schedule(expiresIn: number): void {
  window.clearTimeout(timer);
  const seconds = Math.max(5, expiresIn - EARLY_SECONDS);
  timer = window.setTimeout(() => void refresh(), seconds * 1000);
}

function clear(): void {
  access = null;
  refreshToken = null;
  me = null;
  window.clearTimeout(timer);
  sessionStorage.removeItem(PARKED);
  changed();
}

async function refresh(): Promise<boolean> {
  // One refresh at a time: two would present the same refresh token twice.
  inflight ??= (async () => {
    const token = refreshToken;
    if (!token) return false;
    try {
      const response = await fetch("/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: token }),
      });
      if (response.ok) {
        signedIn((await response.json()) as Tokens);
        return true;
      }
      if (response.status === 401 || response.status === 403) end(await response.json().catch(() => null));
      return false;
    } catch {
      return false;
    }
  })().finally(() => {
    inflight = null;
  });
  return inflight;
}

function signedIn(tokens: Tokens): void {
  access = tokens.access_token;
  refreshToken = tokens.refresh_token;
  endedReason = "";
  schedule(tokens.expires_in);
  changed();
}

function end(problem: unknown): void {
  endedReason = isProblem(problem) ? reasonOf(problem) : "session-revoked";
  clear();
}

export const session = {
  start(): void {
    unpark();
    window.addEventListener("pagehide", park);
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) unpark();
    });
  },
  accessToken: (): string | null => access,
  signedIn,
  /** Whether a token is at hand, refreshing one from a parked refresh token first. */
  async ready(): Promise<boolean> {
    if (!access && refreshToken) await refresh();
    return access !== null;
  },
  /** After a 401: refresh when the access token merely expired; true when the call may be repeated. */
  async refreshAfter(problem: unknown): Promise<boolean> {
    return reasonOf(problem) === "token-expired" && refresh();
  },
  end,
  forget: clear,
  /** Why the last session ended ("" while signed in or never signed in). */
  endedReason: (): string => endedReason,
  user: (): User | null => me,
  setUser(user: User | null): void {
    me = user;
    changed();
  },
  isAdmin: (): boolean => me?.role === "admin",
  onChange(listener: () => void): void {
    listeners.add(listener);
  },
};
