// Live status by polling with backoff: quick at first (a restoration takes seconds), slower
// the longer it takes, paused while the tab is hidden, stopped when the page changes.

export interface PollOptions {
  firstMs?: number;
  factor?: number;
  maxMs?: number;
}

/** Calls `step` until it answers true (finished); returns a function that stops it. */
export function poll(step: () => Promise<boolean>, options: PollOptions = {}): () => void {
  const { firstMs = 700, factor = 1.6, maxMs = 10_000 } = options;
  let delay = firstMs;
  let stopped = false;
  let timer: number | undefined;

  const tick = async () => {
    if (stopped) return;
    if (document.hidden) {
      document.addEventListener("visibilitychange", tick, { once: true });
      return;
    }
    let finished = false;
    try {
      finished = await step();
    } catch {
      // No answer (network): keep trying, more slowly.
    }
    if (finished || stopped) return;
    timer = window.setTimeout(tick, delay);
    delay = Math.min(maxMs, delay * factor);
  };
  timer = window.setTimeout(tick, firstMs);
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
