// The step graph: steps in columns by their distance from the start step,
// arcs between them, each node coloured by its status (data-status).
import { s } from "./dom.js";

const W = 150, H = 44, GX = 70, GY = 26, PAD = 20;

export function renderGraph(graph) {
  const steps = graph.steps || [];
  const arcs = graph.arcs || [];
  const byName = new Map(steps.map((st) => [st.name, st]));
  const out = new Map();
  for (const a of arcs) {
    if (!out.has(a.from)) out.set(a.from, []);
    out.get(a.from).push(a.to);
  }
  // Levels: breadth-first from the start; unreachable steps go last.
  const level = new Map();
  const start = graph.start || (steps[0] && steps[0].name);
  if (start) {
    level.set(start, 0);
    const queue = [start];
    while (queue.length) {
      const n = queue.shift();
      for (const m of out.get(n) || []) {
        if (!level.has(m) && byName.has(m)) {
          level.set(m, level.get(n) + 1);
          queue.push(m);
        }
      }
    }
  }
  let maxLevel = Math.max(0, ...level.values());
  for (const st of steps) if (!level.has(st.name)) level.set(st.name, maxLevel + 1);
  maxLevel = Math.max(0, ...level.values());
  const cols = [];
  for (const st of steps) {
    const l = level.get(st.name);
    (cols[l] = cols[l] || []).push(st.name);
  }
  const pos = new Map();
  let rows = 0;
  cols.forEach((names, l) => {
    (names || []).forEach((n, i) => pos.set(n, { x: PAD + l * (W + GX), y: PAD + i * (H + GY) }));
    rows = Math.max(rows, (names || []).length);
  });
  const width = PAD * 2 + (maxLevel + 1) * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, rows) * (H + GY) - GY + 20;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "step graph" });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa5b8" }))));
  for (const a of arcs) {
    const p = pos.get(a.from), q = pos.get(a.to);
    if (!p || !q) continue;
    let d;
    if (q.x > p.x) {
      const x1 = p.x + W, y1 = p.y + H / 2, x2 = q.x, y2 = q.y + H / 2, mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    } else { // back or sideways: loop under the nodes
      const x1 = p.x + W / 2, y1 = p.y + H, x2 = q.x + W / 2, y2 = q.y + H, low = Math.max(y1, y2) + 18;
      d = `M${x1},${y1} C${x1},${low} ${x2},${low} ${x2},${y2}`;
    }
    const path = s("path", { class: "arc", d, "marker-end": "url(#arrow)", "data-from": a.from, "data-to": a.to });
    if (a.when) path.append(s("title", {}, `when ${a.when}`));
    svg.append(path);
  }
  for (const st of steps) {
    const p = pos.get(st.name);
    const kind = st.kind + (st.loop ? " · loop" : "") + (st.tasks ? ` · ${st.tasks.length} tasks` : "");
    const g = s("g", { class: "node", "data-step": st.name, "data-status": "idle", transform: `translate(${p.x},${p.y})` },
      s("rect", { width: W, height: H, rx: 6 }),
      s("text", { x: 10, y: 18 }, clip(st.name, 20)),
      s("text", { x: 10, y: 34, class: "kind" }, clip(kind, 24)),
      s("text", { x: W - 8, y: 34, class: "kind attempts", "text-anchor": "end" }, ""),
      s("title", {}, `${st.name} (${kind})${st.desc ? "\n" + st.desc : ""}`));
    svg.append(g);
  }
  return svg;
}

function clip(t, n) { return t.length > n ? t.slice(0, n - 1) + "…" : t; }

// stepStatus maps an event to the status it gives its step.
export function stepStatus(ev) {
  switch (ev.event_type) {
    case "command.issued": return "issued";
    case "command.claimed": return "claimed";
    case "command.started": case "command.heartbeat": case "loop.started": return "running";
    case "command.retry_scheduled": return "retrying";
    case "command.completed": case "loop.done": return "completed";
    case "command.failed": case "loop.failed": return "failed";
    case "step.exit": return ev.status && ev.status !== "" ? normal(ev.status) : "completed";
    default: return null;
  }
}

function normal(st) {
  return ["issued", "claimed", "running", "retrying", "completed", "failed", "cancelled"].includes(st) ? st : "completed";
}
