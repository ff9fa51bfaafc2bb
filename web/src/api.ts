// The API client: openapi-fetch typed by the SDK that openapi-typescript generates from the
// gateway's OpenAPI document (build/sdk/typescript). Same origin: the page and /v1 share a host.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "@sdk/schema";
import { session } from "./session";

export type Schemas = components["schemas"];
export type Image = Schemas["ImageOut"];
export type User = Schemas["UserOut"];

export const api = createClient<paths>({ baseUrl: "" });

const bearer: Middleware = {
  onRequest({ request }) {
    const token = session.accessToken();
    if (token && !request.headers.has("Authorization")) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
};
api.use(bearer);

export interface Answer {
  response: { status: number };
  error?: unknown;
}

/**
 * Runs a call that needs a signed-in user. An access token that expired in between is
 * refreshed once and the call repeated; an ended session sends the person to sign in.
 */
export async function authed<T extends Answer>(call: () => Promise<T>): Promise<T> {
  await session.ready();
  let answer = await call();
  if (answer.response.status === 401 && (await session.refreshAfter(answer.error))) {
    answer = await call();
  }
  if (answer.response.status === 401) session.end(answer.error);
  return answer;
}
