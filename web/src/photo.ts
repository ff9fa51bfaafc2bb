// A photo is checked before it is sent (type from its first bytes, size), then sent with
// XMLHttpRequest: fetch() reports no upload progress, and the progress bar needs it.
import { session } from "./session";
import type { Image } from "./api";

export const MAX_BYTES = 1024 * 1024;

function sizeWords(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

/** Words saying why the file can't be sent, or null when it looks like a photo we take. */
export async function checkPhoto(file: File): Promise<string | null> {
  if (file.size === 0) return `"${file.name}" is empty.`;
  if (file.size > MAX_BYTES) {
    return `"${file.name}" is ${sizeWords(file.size)}; photos can be at most 1 MB. Please choose a smaller one.`;
  }
  const head = new Uint8Array(await file.slice(0, 8).arrayBuffer());
  const jpeg = head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff;
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((byte, i) => head[i] === byte);
  if (!jpeg && !png) return `"${file.name}" is not a JPEG or PNG photo.`;
  return null;
}

export interface Sent<T> {
  response: { status: number; headers: { get(name: string): string | null } };
  data?: T;
  error?: unknown;
}

/** POSTs a form with a photo, reporting the share of bytes sent (0..1). */
export function sendForm<T>(url: string, form: FormData, onProgress: (sent: number) => void): Promise<Sent<T>> {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.responseType = "json";
    const token = session.accessToken();
    if (token) request.setRequestHeader("Authorization", `Bearer ${token}`);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      const answer: Sent<T> = {
        response: { status: request.status, headers: { get: (name) => request.getResponseHeader(name) } },
      };
      if (request.status >= 200 && request.status < 300) answer.data = request.response as T;
      else answer.error = request.response;
      resolve(answer);
    });
    // No answer at all: status 0, no problem body.
    request.addEventListener("error", () => resolve({ response: { status: 0, headers: { get: () => null } } }));
    request.send(form);
  });
}

export type Uploaded = Sent<Image>;
