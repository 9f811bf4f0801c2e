// Layered layout of the enclave graph, computed in the browser (no graphviz at run time).
//
// Enclaves are placed in columns by the longest import chain that reaches them (an exporter
// sits left of every importer), tall columns wrap into several, and each column is ordered by
// the mean row of the enclaves it imports from (two barycentre sweeps), which keeps most edges
// short and few crossing. Edges are cubic curves from an exporter's right side to an
// importer's left side; several imports between one pair of enclaves are one edge.

const NODE_W = 200;
const NODE_H = 38;
const GAP_X = 90;
const GAP_Y = 14;
const MAX_ROWS = 20;
const PAD = 16;

export function layoutGraph(nodes, edges) {
  const index = new Map(nodes.map((n, i) => [n.id, i]));
  // One edge per exporter -> importer pair, with every import it stands for.
  const pairs = new Map();
  for (const e of edges) {
    if (!index.has(e.from) || !index.has(e.to) || e.from === e.to) continue;
    const key = `${e.from}\u0000${e.to}`;
    if (!pairs.has(key)) pairs.set(key, { from: e.from, to: e.to, labels: [] });
    const label = e.partition ? `${e.export} (to ${e.partition})` : e.export;
    if (!pairs.get(key).labels.includes(label)) pairs.get(key).labels.push(label);
  }
  const merged = [...pairs.values()];
  const preds = nodes.map(() => []);
  const succs = nodes.map(() => []);
  for (const e of merged) {
    preds[index.get(e.to)].push(index.get(e.from));
    succs[index.get(e.from)].push(index.get(e.to));
  }

  // Longest-path layering (Kahn's order); a cycle, which validation forbids, is cut.
  const layer = new Array(nodes.length).fill(0);
  const indegree = preds.map((p) => p.length);
  const queue = [];
  indegree.forEach((d, i) => d === 0 && queue.push(i));
  let seen = 0;
  while (queue.length) {
    const i = queue.shift();
    seen++;
    for (const j of succs[i]) {
      layer[j] = Math.max(layer[j], layer[i] + 1);
      if (--indegree[j] === 0) queue.push(j);
    }
  }
  if (seen < nodes.length) indegree.forEach((d, i) => d > 0 && (layer[i] = 0));

  const layers = [];
  nodes.forEach((n, i) => (layers[layer[i]] ||= []).push(i));
  for (const l of layers) l?.sort((a, b) => (nodes[a].id < nodes[b].id ? -1 : 1));
  const rowOf = new Array(nodes.length).fill(0);
  const place = () => layers.forEach((l) => l?.forEach((i, r) => (rowOf[i] = r)));
  place();
  for (let sweep = 0; sweep < 2; sweep++) {
    for (const l of layers) {
      if (!l) continue;
      const key = (i) => (preds[i].length ? preds[i].reduce((s, p) => s + rowOf[p], 0) / preds[i].length : rowOf[i]);
      const keys = new Map(l.map((i) => [i, key(i)]));
      l.sort((a, b) => keys.get(a) - keys.get(b));
      l.forEach((i, r) => (rowOf[i] = r));
    }
  }

  // Columns: a layer taller than MAX_ROWS wraps into several side by side.
  const out = new Array(nodes.length);
  let col = 0;
  let maxRows = 0;
  for (const l of layers) {
    if (!l) continue;
    const cols = Math.ceil(l.length / MAX_ROWS);
    const rows = Math.ceil(l.length / cols);
    maxRows = Math.max(maxRows, rows);
    l.forEach((i, k) => {
      const c = col + Math.floor(k / rows);
      const r = k % rows;
      out[i] = { index: i, x: PAD + c * (NODE_W + GAP_X), y: PAD + r * (NODE_H + GAP_Y), w: NODE_W, h: NODE_H };
    });
    col += cols;
  }
  const placed = out.filter(Boolean);
  const width = PAD * 2 + Math.max(1, col) * (NODE_W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.max(1, maxRows) * (NODE_H + GAP_Y) - GAP_Y;
  const routed = merged.map((e) => {
    const a = out[index.get(e.from)];
    const b = out[index.get(e.to)];
    const x1 = a.x + a.w;
    const y1 = a.y + a.h / 2;
    const x2 = b.x;
    const y2 = b.y + b.h / 2;
    const bend = Math.max(30, Math.abs(x2 - x1) / 2);
    return { ...e, path: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}` };
  });
  return { nodes: placed, edges: routed, width, height };
}
