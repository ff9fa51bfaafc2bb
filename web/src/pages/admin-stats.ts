// Admins: usage and model statistics (GET /v1/admin/stats), the images by status as a chart.
import { api, authed, type Schemas } from "../api";
import { field, formatDate, h, messageBox, svg } from "../dom";
import { describeProblem } from "../problems";
import { STATUS_WORDS } from "../quality";
import type { Page } from "../router";

type Stats = Schemas["StatsOut"];
type Bucket = Schemas["UsageBucketOut"];
type Counts = Schemas["UsageCountsOut"];
type ModelStats = Schemas["ModelStatsOut"];
type Granularity = "day" | "hour";

const ORDER = ["queued", "processing", "done", "failed"] as const;

function words(status: string): string {
  return STATUS_WORDS[status as keyof typeof STATUS_WORDS] ?? status;
}

/** A bar chart of images by status: an SVG for the eye, with a table beside it for everyone. */
function statusChart(stats: Stats): HTMLElement {
  const entries = [
    ...ORDER.map((status) => [status, stats.images_by_status[status] ?? 0] as const),
    ...Object.entries(stats.images_by_status).filter(([status]) => !(ORDER as readonly string[]).includes(status)),
  ];
  const largest = Math.max(1, ...entries.map(([, count]) => count));
  const barHeight = 28;
  const width = 520;
  const labelWidth = 170;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${entries.length * (barHeight + 10)}`,
    role: "img",
    "aria-labelledby": "status-chart-title",
    class: "chart",
  });
  chart.append(svg("title", { id: "status-chart-title" }, `Images by status: ${entries.map(([s, c]) => `${c} ${s}`).join(", ")}`));
  entries.forEach(([status, count], index) => {
    const y = index * (barHeight + 10);
    const length = Math.max(2, ((width - labelWidth - 60) * count) / largest);
    chart.append(
      svg("text", { x: 0, y: y + barHeight * 0.7, class: "chart-label" }, words(status)),
      svg("rect", { x: labelWidth, y, width: length, height: barHeight, class: `bar bar-${status}`, rx: 3 }),
      svg("text", { x: labelWidth + length + 6, y: y + barHeight * 0.7, class: "chart-value" }, String(count)),
    );
  });
  const table = h(
    "table",
    { class: "compact" },
    h("caption", {}, "Images by status"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Images"))),
    h(
      "tbody",
      {},
      ...entries.map(([status, count]) =>
        h("tr", { "data-status": status }, h("th", { scope: "row" }, words(status)), h("td", {}, String(count))),
      ),
    ),
  );
  return h("div", { class: "chart-block" }, chart, table);
}

function figures(stats: Stats): HTMLElement {
  const done = stats.images_by_status.done ?? 0;
  const rows: [string, string][] = [
    ["Users", `${stats.users} (of whom ${stats.admins} admin${stats.admins === 1 ? "" : "s"})`],
    ["Images", String(stats.images_total)],
    ["Restored", stats.images_total ? `${done} (${Math.round((100 * done) / stats.images_total)}%)` : "0"],
    ["Faces found", String(stats.faces_total)],
    ["Mean sharpness gain", `${stats.mean_sharpness_gain.toFixed(2)} times as sharp`],
    ["Mean restoration time", `${(stats.mean_duration_ms / 1000).toFixed(1)} seconds`],
    ["Moderation actions", String(stats.moderation_actions)],
  ];
  return h("dl", { class: "figures" }, ...rows.flatMap(([term, value]) => [h("div", {}, h("dt", {}, term), h("dd", {}, value))]));
}

function bucketWords(start: string, granularity: Granularity): string {
  const date = new Date(start);
  return granularity === "day"
    ? date.toLocaleDateString(undefined, { day: "numeric", month: "short", timeZone: "UTC" })
    : date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
}

/** Uploads per bucket as columns (restored in green, failed in red on top), with the numbers in a
 * table: one row per bucket and the period's totals below. */
function usageChart(usage: Stats["usage"], granularity: Granularity): HTMLElement {
  const series: Bucket[] = usage.series;
  const largest = Math.max(1, ...series.map((bucket) => Math.max(bucket.uploads, bucket.done + bucket.failed)));
  const height = 160;
  const step = Math.max(14, Math.floor(560 / Math.max(1, series.length)));
  const chart = svg("svg", {
    viewBox: `0 0 ${series.length * step + 40} ${height + 30}`,
    role: "img",
    "aria-labelledby": "usage-chart-title",
    class: "chart usage",
  });
  const total = series.reduce((sum, bucket) => sum + bucket.uploads, 0);
  chart.append(svg("title", { id: "usage-chart-title" }, `Uploads per ${granularity}: ${total} in all`));
  series.forEach((bucket, index) => {
    const x = 30 + index * step + step * 0.2;
    const done = (height * bucket.done) / largest;
    const failed = (height * bucket.failed) / largest;
    const uploads = (height * bucket.uploads) / largest;
    chart.append(
      svg("rect", { x, y: height - uploads, width: step * 0.6, height: uploads, class: "bar bar-queued", rx: 2 }),
      svg("rect", { x, y: height - done, width: step * 0.6, height: done, class: "bar bar-done", rx: 2 }),
      svg("rect", { x, y: height - done - failed, width: step * 0.6, height: failed, class: "bar bar-failed", rx: 2 }),
    );
    if (series.length <= 14 || index % Math.ceil(series.length / 14) === 0) {
      chart.append(svg("text", { x: x - step * 0.2, y: height + 20, class: "chart-value" }, bucketWords(bucket.start, granularity)));
    }
  });
  const columns: [string, (counts: Counts) => string][] = [
    ["Sign-ins", (c) => String(c.sign_ins)],
    ["New users", (c) => String(c.sign_ups)],
    ["Uploads", (c) => String(c.uploads)],
    ["Restored", (c) => String(c.done)],
    ["Failed", (c) => String(c.failed)],
    ["Versions requested", (c) => String(c.restorations_requested)],
    ["Searches", (c) => String(c.searches)],
    ["Active users", (c) => String(c.active_users)],
  ];
  const table = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "usage-table" },
      h("caption", {}, `Usage per ${granularity} (UTC)`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, granularity === "day" ? "Day" : "Hour"), ...columns.map(([name]) => h("th", { scope: "col" }, name)))),
      h(
        "tbody",
        {},
        ...series.map((bucket) =>
          h("tr", {}, h("th", { scope: "row" }, bucketWords(bucket.start, granularity)), ...columns.map(([, value]) => h("td", {}, value(bucket)))),
        ),
      ),
      // Active users over the period are distinct people, not the sum of the rows.
      h(
        "tfoot",
        {},
        h("tr", { class: "totals" }, h("th", { scope: "row" }, "Total"), ...columns.map(([, value]) => h("td", {}, value(usage.totals)))),
      ),
    ),
  );
  return h("div", {}, h("p", { class: "legend" }, "Columns: uploads; green: restored; red: failed."), chart, table);
}

function modelsTable(caption: string, models: ModelStats[]): HTMLElement {
  const columns: [string, (m: ModelStats) => string][] = [
    ["Images", (m) => String(m.images)],
    ["Failed", (m) => `${(m.failure_rate * 100).toFixed(1)}%`],
    ["Time (median)", (m) => `${(m.duration_ms.p50 / 1000).toFixed(1)} s`],
    ["Time (95%)", (m) => `${(m.duration_ms.p95 / 1000).toFixed(1)} s`],
    ["Likeness (mean)", (m) => (m.identity_similarity.count ? `${Math.round(m.identity_similarity.mean * 100)}%` : "–")],
    ["Sharper (mean)", (m) => (m.sharpness_gain.count ? `${m.sharpness_gain.mean.toFixed(2)}×` : "–")],
    ["Rating", (m) => (m.ratings && m.mean_rating ? `${m.mean_rating.toFixed(1)} of 5 (${m.ratings})` : "–")],
  ];
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"), ...columns.map(([name]) => h("th", { scope: "col" }, name)))),
      h(
        "tbody",
        {},
        ...(models.length
          ? models.map((model) => h("tr", {}, h("th", { scope: "row" }, model.model), ...columns.map(([, value]) => h("td", {}, value(model)))))
          : [h("tr", {}, h("td", { colspan: columns.length + 1 }, "No images finished yet."))]),
      ),
    ),
  );
}

function queuesTable(stats: Stats): HTMLElement {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, "Queues"),
      h(
        "thead",
        {},
        h("tr", {}, ...["Queue", "Waiting", "Workers", "To retry", "Given up (dead letters)", "Reachable"].map((text) => h("th", { scope: "col" }, text))),
      ),
      h(
        "tbody",
        {},
        ...stats.queues.map((queue) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, `${queue.consumer} (${queue.queue})`),
            h("td", {}, String(queue.messages)),
            h("td", {}, String(queue.consumers)),
            h("td", {}, String(queue.retry_messages)),
            h("td", {}, String(queue.dead_letter_messages)),
            h("td", {}, queue.available ? "yes" : "no"),
          ),
        ),
      ),
    ),
  );
}

export const adminStatsPage: Page = {
  title: "Statistics",
  auth: true,
  admin: true,
  async render(root, _params, query) {
    const message = messageBox();
    const granularity: Granularity = query.get("per") === "hour" ? "hour" : "day";
    const per = h("select", { name: "granularity" }, h("option", { value: "day" }, "Per day, last 7 days"), h("option", { value: "hour" }, "Per hour, last 24 hours"));
    per.value = granularity;
    per.addEventListener("change", () => {
      location.hash = `#/admin/stats?per=${per.value}`;
    });
    const body = h("div");
    root.append(h("h1", { tabindex: -1 }, "Statistics"), message.element, h("div", { class: "inline-form" }, field("Period", per)), body);
    const { data, error } = await authed(() => api.GET("/v1/admin/stats", { params: { query: { granularity } } }));
    if (!data) {
      message.error(describeProblem(error));
      return;
    }
    body.append(
      h("p", { class: "hint" }, `As of ${formatDate(data.generated_at)}.`),
      figures(data),
      h("h2", {}, "Images by status"),
      statusChart(data),
      h("h2", {}, "Usage over time"),
      usageChart(data.usage, granularity),
      h("h2", {}, "Models"),
      modelsTable("Restoration models", data.models.restorers),
      modelsTable("Face analysis models", data.models.analyzers),
      h("h2", {}, "Work waiting"),
      queuesTable(data),
    );
  },
};
