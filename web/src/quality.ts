// The restoration's numbers in plain words.
import type { Image, Schemas } from "./api";

type Quality = Schemas["QualityOut"];

export const STATUS_WORDS: Record<Image["status"], string> = {
  queued: "Waiting to be restored",
  processing: "Being restored",
  done: "Restored",
  failed: "Could not be restored",
};

/** How much the restored faces still look like the people (cosine similarity before and after; the least alike face counts). */
export function likenessWords(identity: number, faces: number): string {
  const subject = faces > 1 ? "Every restored face" : "The restored face";
  const likeness = `${Math.round(identity * 100)}% likeness${faces > 1 ? " for the least alike" : ""}`;
  if (identity >= 0.8) return `${subject} still clearly looks like the same person (${likeness}).`;
  if (identity >= 0.6) return `${subject} mostly looks like the same person (${likeness}).`;
  if (identity >= 0.4) return `${subject} looks only partly like the same person (${likeness}): compare carefully.`;
  return `${subject} may no longer look like the same person (${likeness}).`;
}

export function sharpnessWords(gain: number): string {
  if (gain >= 1.1) return `It is ${gain.toFixed(1)} times as sharp as the original.`;
  if (gain >= 0.9) return "It is about as sharp as the original.";
  return `It is softer than the original (${gain.toFixed(1)} times the sharpness).`;
}

export function qualityWords(quality: Quality, faces: number | null | undefined): string[] {
  const words: string[] = [];
  if (quality.warnings.includes("no-face-found") || faces === 0) {
    words.push("No face was found, so the whole photo was enhanced.");
  } else {
    words.push(`${faces ?? 1} face${faces === 1 ? " was" : "s were"} restored.`);
    if (quality.identity_mean && quality.identity_mean > 0) {
      words.push(likenessWords(quality.identity_min && quality.identity_min > 0 ? quality.identity_min : quality.identity_mean, faces ?? 1));
    }
  }
  words.push(sharpnessWords(quality.sharpness_gain));
  const seconds = (quality.duration_ms / 1000).toFixed(1);
  const model = quality.restorer_model ? ` (${quality.restorer_model})` : "";
  words.push(`Restored in ${seconds} seconds by the ${quality.backend} restorer${model}.`);
  return words;
}

const FAILURES: Record<string, string> = {
  undecodable: "The photo could not be read.",
  retries_exhausted: "Our storage or messaging kept failing, so the restoration was given up. Please upload it again.",
  redelivery_limit: "The restoration kept failing on this photo, so it was given up.",
};

export function failureWords(error: string | null | undefined): string {
  const reason = (error ?? "").split(":")[0].trim();
  return FAILURES[reason] ?? "The restoration could not be completed. Please try another photo.";
}
