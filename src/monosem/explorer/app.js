// The explorer's pages, drawn from data files that call MONOSEM.put(key, value) or, packed, MONOSEM.putz(key, base64)
// (see monosem/explorer/__init__.py: pack).
// Routes live in the URL hash, so every page works from disk: #/study/NAME, #/model/STUDY/LABEL,
// #/neuron/STUDY/LABEL/N, #/saes/NAME, #/sae/NAME/SAE, #/claims.
"use strict";

const MONOSEM = (window.MONOSEM = {
  data: {}, waiting: {},
  // A heatmap draws at most maxCells cells, about one per pixel of its plot at the page's width: past that a
  // cell is narrower than a pixel and cannot be seen, and Plotly takes ~0.7 s per million cells. A larger one
  // keeps its first neurons (latents) in the page's order, which puts the most monosemantic (the matched) first,
  // and its title says how many of how many; the table below lists them all.
  maxCells: 2 ** 19,
  put(key, value) { this.data[key] = value; (this.waiting[key] || []).forEach((f) => f(value)); delete this.waiting[key]; },
  putz(key, b64) { this.put(key, unpack(b64)); },  // a promise of the page; load() waits for it
});

// A packed page: zlib(4-byte length, JSON, matrices' bytes), base64. Each {"$m": [rows, cols, bits, scale, offset]}
// becomes {shape, scale, q}: q the integers (Int8Array or Int16Array over the inflated bytes).
async function unpack(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const raw = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"))).arrayBuffer();
  const n = new DataView(raw).getUint32(0, true), base = 4 + n;
  const walk = (o) => {
    if (Array.isArray(o)) return o.map(walk);
    if (o === null || typeof o !== "object") return o;
    if (o.$m) {
      const [r, c, bits, scale, offset] = o.$m;
      return { shape: [r, c], scale, q: new (bits === 8 ? Int8Array : Int16Array)(raw, base + offset, r * c) };
    }
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, walk(v)]));
  };
  return walk(JSON.parse(new TextDecoder().decode(new Uint8Array(raw, 4, n))));
}

function load(key) {
  if (key in MONOSEM.data) return Promise.resolve(MONOSEM.data[key]);
  return new Promise((resolve, reject) => {
    (MONOSEM.waiting[key] = MONOSEM.waiting[key] || []).push(resolve);
    const s = document.createElement("script");
    s.src = "data/" + key + ".js";
    s.onerror = () => reject(new Error("missing data file data/" + key + ".js (re-run the report stage)"));
    document.head.appendChild(s);
  });
}

// --- small helpers ----------------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
const objects = (t) => t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c, r[i]])));
const enc = encodeURIComponent;
const link = (text, hash) => h("a", { href: "#/" + hash.map(enc).join("/") }, text);
function fmt(v) {
  if (v === null || v === undefined || (typeof v === "number" && isNaN(v))) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : String(+v.toPrecision(4));
}
function matrix(m) { // {shape, scale, q} -> rows of numbers
  const [r, c] = m.shape, out = [];
  for (let i = 0; i < r; i++) out.push(Array.from(m.q.subarray(i * c, (i + 1) * c), (x) => x * m.scale));
  return out;
}
// A claim's three-way verdict (holds / does not hold / inconclusive / not run), from `holds` where it has none.
const verdictOf = (c) => c.verdict || (c.holds === true ? "holds" : c.holds === false ? "does not hold" : "not run");
const verdict = (c) => h("span", { class: { holds: "holds", "does not hold": "fails" }[verdictOf(c)] || "untested" },
  verdictOf(c));
const shown = (count, across) => Math.min(count, Math.max(1, Math.floor(MONOSEM.maxCells / across)));  // heatmap lines drawn
const ofAll = (n, total, what) => (n < total ? ` (the first ${n} of ${total} ${what})` : "");
const plotDiv = (id, height) => h("div", { id, class: "plot", style: `height:${height || 420}px` });
const CONFIG = { displaylogo: false, responsive: true };
const plot = (id, data, layout) => {
  if (layout.title) layout.title = Object.assign({ x: 0.01, xanchor: "left" }, layout.title);  // clear of the mode bar
  return Plotly.newPlot(id, data, Object.assign({ margin: { t: 40, r: 20, b: 50, l: 60 } }, layout), CONFIG);
};
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const CLASS_COLOUR = { mono: "#1f77b4", poly: "#d62728", dead: "#7f7f7f" };
const mlflowRun = (runId) => {
  const e = MONOSEM.data.index.experiment;
  return runId ? h("a", { href: `${e.ui}/#/experiments/${e.id}/runs/${runId}`, target: "_blank", title: "open with `make ui`" }, "run") : "–";
};

// A table whose headers sort it (click again to reverse) and, optionally, a select that filters one column.
function sortableTable(cols, rows, { filter, id } = {}) {
  let key = null, dir = 1, only = "";
  const body = h("tbody"), head = h("tr");
  const wrap = h("div", {}, h("div", { class: "table-wrap" }, h("table", { class: "data", id }, h("thead", {}, head), body)));
  const draw = () => {
    let shown = rows.filter((r) => !only || String(r[filter]) === only);
    if (key !== null) {
      shown = shown.slice().sort((a, b) => {
        const x = a[key], y = b[key];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
      });
    }
    body.replaceChildren(...shown.map((r) => h("tr", {}, cols.map((c) => h("td", { class: c.text ? "text" : null },
      c.cell ? c.cell(r) : fmt(r[c.key]))))));
  };
  cols.forEach((c) => head.append(h("th", { class: c.text ? "text" : null, title: c.title || c.key, onclick: (ev) => {
    dir = key === c.key ? -dir : 1; key = c.key;
    head.querySelectorAll("th").forEach((th) => (th.className = c.text ? "text" : ""));
    ev.target.classList.add(dir > 0 ? "sorted-asc" : "sorted-desc");
    draw();
  } }, c.label || c.key)));
  if (filter) {
    const values = [...new Set(rows.map((r) => String(r[filter])))].sort();
    const sel = h("select", { onchange: (ev) => { only = ev.target.value; draw(); } }, h("option", { value: "" }, "all"),
      values.map((v) => h("option", { value: v }, v)));
    wrap.prepend(h("div", { class: "controls" }, h("label", {}, `${filter}: `, sel)));
  }
  draw();
  return wrap;
}

// --- pages ------------------------------------------------------------------------------------------------
const study = (name) => MONOSEM.data.index.studies.find((s) => s.name === name) || fail(`no study ${name}`);
const saeStudy = (name) => MONOSEM.data.index.saes.find((s) => s.name === name) || fail(`no SAE study ${name}`);
function fail(msg) { throw new Error(msg); }
const STUDY_COLUMNS = {
  jermyn: ["loss", "mono_per_feature", "mono_per_neuron", "features_covered", "n_dead", "bias_mean_mono", "bias_mean_poly"],
  tied: ["loss", "dims_per_feature", "features_learned", "n_represented", "mean_superposition", "n_mono", "gain"],
};
const LABELS = { mono_per_feature: "#mono/#features", mono_per_neuron: "#mono/#neurons", n_dead: "dead",
  diverged_at: "diverged at", dims_per_feature: "D* = m/‖W‖²", features_learned: "‖W‖²_F", n_represented: "represented",
  explained_variance: "explained var.", mcc: "MCC", l0: "L0", shrinkage_gamma: "γ", loss_recovered: "loss recovered" };

function home(main) {
  const idx = MONOSEM.data.index;
  main.append(h("h1", {}, "Studies"), h("p", { class: "facts" }, `${idx.studies.length} studies, `,
    `${idx.studies.reduce((n, s) => n + s.instances.rows.length, 0)} models; MLflow experiment `, h("code", {}, idx.experiment.name),
    ". ", link("All claims", ["claims"]), "."));
  const rows = idx.studies.map((s) => {
    const inst = objects(s.instances).filter((r) => r.diverged_at === null);
    const mean = (k) => (inst.length && k in inst[0] ? inst.reduce((a, r) => a + (r[k] ?? 0), 0) / inst.length : null);
    return { name: s.name, kind: s.kind, world: s.world, sweep: Object.keys(s.sweep).join(" × ") || "–", models: s.instances.rows.length,
      loss: mean("loss"), mono_per_feature: mean("mono_per_feature") };
  });
  main.append(sortableTable([{ key: "name", cell: (r) => link(r.name, ["study", r.name]) }, { key: "kind" }, { key: "world" },
    { key: "sweep", text: true }, { key: "models" }, { key: "loss", label: "mean loss" },
    { key: "mono_per_feature", label: "mean #mono/#features" }], rows, { id: "studies" }));
  if (idx.saes.length) {
    main.append(h("h2", {}, "Sparse autoencoders"), sortableTable([{ key: "name", cell: (r) => link(r.name, ["saes", r.name]) },
      { key: "layer" }, { key: "model", text: true }, { key: "latents" }, { key: "saes" }], idx.saes.map((s) => ({
      name: s.name, layer: s.layer, model: `${s.study} ${s.instance}`, latents: s.latents, saes: s.rows.rows.length }))));
  }
}

function studyPage(main, [name]) {
  const s = study(name), rows = objects(s.instances), tied = s.kind !== "jermyn";
  const claims = MONOSEM.data.index.claims.filter((c) => (c.studies || []).includes(name));
  main.append(h("h1", {}, `Study ${name}`), h("p", { class: "facts" },
    `World ${s.world} (${s.task}, N = ${s.n_features}); ${s.kind}${tied ? "" : " " + s.activation}, ${s.neurons} hidden units; `,
    `sweep ${Object.entries(s.sweep).map(([k, v]) => `${k} ∈ {${v.join(", ")}}`).join(" × ") || "none"}; seeds ${s.seeds.join(", ")}.`),
  claims.length ? h("p", {}, "Claims using it: ", claims.map((c, i) => [i ? "; " : "", link(c.id, ["claims"]), " ", verdict(c)])) : null);
  const metrics = s.instances.columns.filter((c) => rows.some((r) => typeof r[c] === "number") && !["seed", "diverged_at"].includes(c) && !c.startsWith("sweep."));
  const initial = tied ? (metrics.includes("dims_per_feature") ? "dims_per_feature" : "mono_per_neuron") : "mono_per_feature";
  const sel = h("select", { id: "metric", onchange: (ev) => sweepPlot(s, rows, ev.target.value) }, metrics.map((m) =>
    h("option", { value: m, selected: m === initial ? "" : null }, LABELS[m] || m)));
  main.append(h("div", { class: "controls" }, h("label", {}, "plotted: ", sel)), plotDiv("sweep", 380));
  const shown = (tied ? STUDY_COLUMNS.tied : STUDY_COLUMNS.jermyn).filter((c) => s.instances.columns.includes(c));
  main.append(h("h2", {}, "Models"), sortableTable([
    { key: "label", label: "model", cell: (r) => (r.page ? link(r.label, ["model", name, r.label]) : r.label) }, { key: "point" }, { key: "seed" },
    ...shown.map((k) => ({ key: k, label: LABELS[k] || k })), { key: "diverged_at", label: "diverged at" },
    { key: "run_id", label: "MLflow", cell: (r) => mlflowRun(r.run_id) }], rows, { id: "instances" }));
  return sweepPlot(s, rows, initial);
}

function sweepPlot(s, rows, metric) {
  const xk = s.x_key && "sweep." + s.x_key, live = rows.filter((r) => r.diverged_at === null);
  const xs = live.map((r) => (xk ? r[xk] : r.point)), numeric = xs.every((x) => typeof x === "number");
  const logx = numeric && xs.every((x) => x > 0) && Math.max(...xs) / Math.min(...xs) >= 8;
  const series = {};
  live.forEach((r) => {
    const k = s.series_keys.map((key) => `${key.split(".").pop()}=${r["sweep." + key]}`).join(",") || "seeds";
    (series[k] = series[k] || []).push(r);
  });
  const traces = Object.entries(series).flatMap(([k, rs], i) => [{
    type: "scatter", mode: "markers", name: k, legendgroup: k, marker: { size: 9, opacity: 0.8, color: PALETTE[i % PALETTE.length] }, x: rs.map((r) => (xk ? r[xk] : r.point)), y: rs.map((r) => r[metric]),
    customdata: rs.map((r) => [r.label, r.seed]),
    hovertemplate: `%{customdata[0]}<br>seed %{customdata[1]}<br>${LABELS[metric] || metric} %{y:.4g}<extra></extra>`,
  }, meanLine(rs, (r) => (xk ? r[xk] : r.point), metric, k, PALETTE[i % PALETTE.length])]);
  const layout = { title: { text: `${s.name}: ${LABELS[metric] || metric}, every seed a point (click: the model)` },
    xaxis: { title: { text: s.x_key || "point" }, type: logx ? "log" : numeric ? "linear" : "category" },
    yaxis: { title: { text: LABELS[metric] || metric } }, hovermode: "closest" };
  return plot("sweep", traces, layout).then((gd) => {
    gd.removeAllListeners && gd.removeAllListeners("plotly_click");
    gd.on("plotly_click", (ev) => go(["model", s.name, ev.points[0].customdata[0]]));
  });
}

function meanLine(rs, x, metric, group, color) { // the seeds' mean at each swept value
  const at = new Map();
  rs.forEach((r) => { if (r[metric] !== null) at.set(x(r), (at.get(x(r)) || []).concat([r[metric]])); });
  const xs = [...at.keys()];
  return { type: "scatter", mode: "lines", x: xs, y: xs.map((v) => at.get(v).reduce((a, b) => a + b, 0) / at.get(v).length),
    name: `${group} mean`, legendgroup: group, showlegend: false, hoverinfo: "skip", line: { color, width: 1.5 } };
}

async function modelData(name, label) {
  const s = study(name), row = objects(s.instances).find((r) => r.label === label) || fail(`no model ${label} in ${name}`);
  if (row.diverged_at !== null) fail(`${name} ${label} diverged at step ${row.diverged_at}: nothing to show`);
  return { s, row, d: await load(row.page) };
}

function curvesPlot(id, name, label, curves) { // one panel per logged curve, sharing the step axis
  const keys = Object.keys(curves).filter((k) => k !== "step");
  return plot(id, keys.map((k, i) => ({ type: "scatter", mode: "lines", name: k, x: curves.step, y: curves[k],
    yaxis: i ? `y${i + 1}` : "y", line: { color: PALETTE[i] }, hovertemplate: `step %{x}<br>${k} %{y:.4g}<extra></extra>` })),
  Object.assign({ title: { text: `${name} ${label}: training curves` }, xaxis: { type: "log", title: { text: "step" } },
    grid: { rows: keys.length, columns: 1, pattern: "coupled", roworder: "top to bottom" }, showlegend: false },
  ...keys.map((k, i) => ({ [`yaxis${i ? i + 1 : ""}`]: { title: { text: LABELS[k] || k, font: { size: 11 } } } }))));
}

async function modelPage(main, [name, label]) {
  const { s, row, d } = await modelData(name, label);
  main.append(h("h1", {}, `${name} · ${label}`));
  if (s.kind !== "jermyn") return tiedModel(main, s, row, d);
  const neurons = objects(d.table), byId = Object.fromEntries(neurons.map((r) => [r.neuron, r]));
  const sm = d.summary, sfa = matrix(d.sfa);
  main.append(h("p", { class: "facts" }, `Loss ${fmt(row.loss)}; ${sm.n_mono} monosemantic, ${sm.n_poly} polysemantic, `,
    `${sm.n_dead} dead of ${sm.n_neurons} neurons (frac_mono > 0.999); ${fmt(row.mono_per_feature)} monosemantic neurons per feature. `,
    "MLflow: ", mlflowRun(row.run_id), ". ", link("Study", ["study", name])),
  plotDiv("sfa", 520), h("div", { class: "row" }, plotDiv("curves", 420), plotDiv("bias", 420)), h("h2", {}, "Neurons"),
  sortableTable([{ key: "neuron", cell: (r) => link(r.neuron, ["neuron", name, label, r.neuron]) },
    { key: "class", cell: (r) => h("span", { class: "cls-" + r.class }, r.class) }, { key: "frac_mono" }, { key: "bias" },
    { key: "n_features_active", label: "features on" }, { key: "feature_1", label: "top feature" }, { key: "share_1", label: "its share" },
    { key: "feature_2", label: "2nd" }, { key: "share_2", label: "share" }, { key: "out_norm", label: "‖w_out‖" },
    { key: "linear_regime", label: "active on eval" }, { key: "mfa_ratio", label: "2-feature ratio" }], neurons,
  { filter: "class", id: "neurons" }));
  const feats = d.feature_order, order = d.neuron_order.slice(0, shown(d.neuron_order.length, feats.length));
  const z = feats.map((f) => order.map((n) => sfa[n][f]));
  const custom = feats.map((f) => order.map((n) => [n, f, byId[n].frac_mono, byId[n].class]));
  const open = (n) => go(["neuron", name, label, n]);
  const heat = plot("sfa", [{ type: "heatmap", z, customdata: custom, colorscale: "Viridis", colorbar: { title: { text: "activation" } },
    hovertemplate: "neuron %{customdata[0]}<br>feature %{customdata[1]}<br>activation %{z:.3g}<br>frac_mono %{customdata[2]:.4f}"
      + "<br>class %{customdata[3]}<extra></extra>" }], {
    title: { text: `Single-feature activations: neurons most monosemantic first${ofAll(order.length, d.neuron_order.length, "neurons")} (click a neuron)` },
    xaxis: { title: { text: "neuron (by frac_mono)" } }, yaxis: { title: { text: "feature (by the neuron it drives most)" }, autorange: "reversed" } })
    .then((gd) => gd.on("plotly_click", (ev) => open(ev.points[0].customdata[0])));
  const rank = new Map(d.neuron_order.map((n, i) => [n, i]));
  const classes = ["mono", "poly", "dead"].map((c) => {
    const ns = d.neuron_order.filter((n) => byId[n].class === c);
    return { type: "scatter", mode: "markers", name: c, marker: { color: CLASS_COLOUR[c] }, x: ns.map((n) => rank.get(n)), y: ns.map((n) => d.bias[n]),
      customdata: ns.map((n) => [n, byId[n].frac_mono]), hovertemplate: "neuron %{customdata[0]}<br>bias %{y:.4f}<br>frac_mono %{customdata[1]:.4f}<extra>%{fullData.name}</extra>" };
  });
  const bias = plot("bias", classes, { title: { text: "Bias per neuron (click: the neuron)" }, xaxis: { title: { text: "neuron (by frac_mono)" } },
    yaxis: { title: { text: "bias" } }, hovermode: "closest" }).then((gd) => gd.on("plotly_click", (ev) => open(ev.points[0].customdata[0])));
  return Promise.all([heat, bias, curvesPlot("curves", name, label, d.curves)]);
}

function tiedModel(main, s, row, d) {
  const W = matrix(d.W), m = W.length, n = W[0].length;
  main.append(h("p", { class: "facts" }, `${s.kind}: ${n} features in ${m} hidden dimensions; loss ${fmt(row.loss)}; `,
    `D* ${fmt(row.dims_per_feature)}. MLflow: `, mlflowRun(row.run_id), ". ", link("Study", ["study", s.name])),
  h("div", { class: "row" }, plotDiv("weights", 380), plotDiv("curves", 380)), plotDiv("bias", 300), h("h2", {}, "Features"),
  sortableTable(d.features.columns.map((c) => ({ key: c })), objects(d.features), { id: "features" }));
  return Promise.all([
    plot("weights", [{ type: "heatmap", z: W, colorscale: "RdBu", zmid: 0, hovertemplate: "hidden %{y}<br>feature %{x}<br>W %{z:.4f}<extra></extra>" }],
      { title: { text: "W (hidden × feature)" }, xaxis: { title: { text: "feature" } }, yaxis: { title: { text: "hidden dimension" }, autorange: "reversed" } }),
    plot("bias", [{ type: "bar", y: d.b, hovertemplate: "feature %{x}<br>b %{y:.4f}<extra></extra>" }],
      { title: { text: "output bias b" }, xaxis: { title: { text: "feature" } } }),
    curvesPlot("curves", s.name, row.label, d.curves)]);
}

async function neuronPage(main, [name, label, id]) {
  const { d } = await modelData(name, label), n = Number(id);
  const r = objects(d.table).find((x) => x.neuron === n) || fail(`no neuron ${id} in ${name} ${label}`);
  const sfa = matrix(d.sfa)[n], outs = matrix(d.w_out_index).map((row) => row[n]), w = matrix(d.w_out_top).map((row) => row[n]);
  const rest = Math.sqrt(Math.max(r.out_norm ** 2 - w.reduce((a, v) => a + v * v, 0), 0));
  const total = sfa.reduce((a, v) => a + Math.max(v, 0), 0);
  const ranked = sfa.map((v, f) => [f, v]).sort((a, b) => b[1] - a[1]);
  const pos = d.neuron_order.indexOf(n), prev = d.neuron_order[pos - 1], next = d.neuron_order[pos + 1];
  main.append(h("h1", {}, `Neuron ${n} of ${name} · ${label}`), h("p", { class: "facts" },
    "Class ", h("span", { class: "cls-" + r.class, id: "class" }, r.class), `; frac_mono ${fmt(r.frac_mono)}; bias ${fmt(d.bias[n])}; `,
    `‖w_out‖ ${fmt(r.out_norm)}; active on ${fmt(100 * r.linear_regime)}% of eval inputs; rank ${pos + 1} of ${d.neuron_order.length} by frac_mono. `,
    link("Model", ["model", name, label]), prev !== undefined ? [" · ", link("← more monosemantic", ["neuron", name, label, prev])] : null,
    next !== undefined ? [" · ", link("less monosemantic →", ["neuron", name, label, next])] : null));
  const mixed = [];
  for (let i = 0, acc = 0; i < ranked.length && ranked[i][1] > 0 && acc < 0.95; i++) { acc += ranked[i][1] / total; mixed.push(ranked[i]); }
  if (r.class === "poly") main.append(h("p", { id: "mixes" }, `Mixes ${mixed.length} features (95% of its response): `,
    mixed.map(([f, v]) => `${f} (${fmt(100 * v / total)}%)`).join(", ")));
  const sens = [0.99, 0.999, 0.9999].map((t) => ({ test: `frac_mono > ${t}`, value: r.frac_mono, mono: r.frac_mono > t ? "yes" : "no" }))
    .concat(d.frac_mono_at.map(({ amplitude: a, values: v }) => ({ test: `probes at amplitude ${a}, frac_mono > 0.999`, value: v[n], mono: v[n] > 0.999 ? "yes" : "no" })));
  main.append(h("h2", {}, "Sensitivity of the monosemantic rule"), sortableTable([{ key: "test", text: true },
    { key: "value", label: "frac_mono" }, { key: "mono", label: "monosemantic?" }], sens, { id: "sensitivity" }),
  h("div", { class: "row" }, plotDiv("response", 400), plotDiv("outputs", 400)));
  return Promise.all([
    plot("response", [{ type: "bar", x: ranked.map(([f]) => `f${f}`), y: ranked.map(([, v]) => v),
      customdata: ranked.map(([, v]) => (total > 0 ? Math.max(v, 0) / total : 0)),
      hovertemplate: "feature %{x}<br>activation %{y:.3g}<br>share %{customdata:.1%}<extra></extra>" }],
    { title: { text: "Response to each feature alone (amplitude 1), sorted" }, xaxis: { title: { text: "feature" }, type: "category" },
      yaxis: { title: { text: "activation" } } }),
    plot("outputs", [{ type: "bar", x: outs.map((o) => `out ${o}`), y: w, hovertemplate: "%{x}<br>weight %{y:.4f}<extra></extra>" }],
      { title: { text: `Output weights W2[:, n]: its ${w.length} largest by magnitude; the rest's norm ${fmt(rest)}` },
        xaxis: { title: { text: "output" }, type: "category" }, yaxis: { title: { text: "weight" } } })]);
}

function saeScatter(id, a, rows, panels, highlight) {
  const archs = [...new Set(rows.map((r) => r.architecture))];  // one colour each, the same in every panel
  const traces = [];
  panels.forEach(([metric], p) => archs.forEach((arch, i) => {
    const rs = rows.filter((r) => r.architecture === arch);
    traces.push({ type: "scatter", mode: "markers", name: arch, legendgroup: arch, showlegend: p === 0, xaxis: `x${p + 1}`, yaxis: `y${p + 1}`,
      x: rs.map((r) => r.l0), y: rs.map((r) => r[metric]), marker: { color: PALETTE[i % PALETTE.length], size: rs.map((r) => (r.sae === highlight ? 16 : 8)),
        line: { width: rs.map((r) => (r.sae === highlight ? 2 : 0)), color: "#000" } }, customdata: rs.map((r) => [r.sae, r.knob, r.seed, r.explained_variance, r.mcc]),
      hovertemplate: `${arch} ${knobLabel(a, arch)} %{customdata[1]} seed %{customdata[2]}<br>L0 %{x:.3g}<br>EV %{customdata[3]:.4f}<br>MCC %{customdata[4]:.4f}`
        + `<br>${LABELS[metric] || metric} %{y:.4f}<extra></extra>` });
  }));
  const layout = { grid: { rows: 1, columns: panels.length, pattern: "independent" }, hovermode: "closest",
    title: { text: `sae@${a.name}: every SAE a point (click: the SAE); dashed: the true L0 ${fmt(a.true_l0)}` }, shapes: [] };
  panels.forEach(([metric, ref], p) => {
    layout[`xaxis${p + 1}`] = { type: "log", title: { text: "L0" } };
    layout[`yaxis${p + 1}`] = { title: { text: LABELS[metric] || metric } };
    layout.shapes.push({ type: "line", xref: `x${p + 1}`, yref: `y${p + 1} domain`, x0: a.true_l0, x1: a.true_l0, y0: 0, y1: 1, line: { dash: "dash", color: "#888" } });
    if (ref !== null) layout.shapes.push({ type: "line", xref: `x${p + 1} domain`, yref: `y${p + 1}`, x0: 0, x1: 1, y0: ref, y1: ref, line: { dash: "dot", color: "#888" } });
  });
  return plot(id, traces, layout).then((gd) => gd.on("plotly_click", (ev) =>
    go(["sae", a.name, ev.points[0].customdata[0]])));
}

const knobLabel = (a, arch) => (a.knobs[arch] === "lambda" ? "λ" : a.knobs[arch]);  // each architecture's sweep knob

function saesPage(main, [name]) {
  const a = saeStudy(name), rows = objects(a.rows);
  const claims = MONOSEM.data.index.claims.filter((c) => (c.studies || []).includes(name));
  main.append(h("h1", {}, `SAEs: ${name}`), h("p", { class: "facts" }, `${rows.length} SAEs with ${a.latents} latents on the ${a.layer} layer of `,
    link(`${a.study} ${a.instance}`, ["model", a.study, a.instance]), `; true mean L0 ${fmt(a.true_l0)}.`),
  plotDiv("pareto", 420), h("h2", {}, "Claims"), sortableTable([{ key: "claim", text: true }, { key: "holds", label: "verdict", cell: (c) => verdict(c) },
    { key: "evidence", text: true }], claims), h("h2", {}, "Every SAE"), sortableTable([{ key: "sae", cell: (r) => link(r.sae, ["sae", name, r.sae]) },
    { key: "architecture" }, { key: "knob", label: "λ or k" }, { key: "seed" }, ...["l0", "explained_variance", "mcc", "f1", "recovered_at_0.9",
      "shrinkage_gamma", "magnitude_ratio", "dead_fraction", "loss_recovered"].map((k) => ({ key: k, label: LABELS[k] || k }))], rows,
  { filter: "architecture", id: "saes" }));
  return saeScatter("pareto", a, rows, [["explained_variance", 1], ["mcc", 1], ["loss_recovered", 1]]);
}

async function saePage(main, [name, label]) {
  const a = saeStudy(name), rows = objects(a.rows);
  const r = rows.find((x) => x.sae === label) || fail(`no SAE ${label} in ${name}`), d = await load(r.page);
  const lat = d.latent_order.slice(0, shown(d.latent_order.length, d.feature_order.length)), cos = matrix(d.cos).slice(0, lat.length);
  main.append(h("h1", {}, `SAE ${label}`), h("p", { class: "facts" }, `${r.architecture}, ${knobLabel(a, r.architecture)} = ${r.knob}, seed ${r.seed}: `,
    `L0 ${fmt(r.l0)}, explained variance ${fmt(r.explained_variance)}, MCC ${fmt(r.mcc)}, γ ${fmt(r.shrinkage_gamma)}, `,
    `magnitude ratio ${fmt(r.magnitude_ratio)}, dead ${fmt(r.dead_fraction)}. `, link(`All SAEs of ${name}`, ["saes", name])),
  plotDiv("cosine", 560), plotDiv("shrinkage", 380), h("h2", {}, "Matched pairs (the MCC's one-to-one matching)"),
  sortableTable([{ key: "latent" }, { key: "feature" }, { key: "cos" }], d.pairs.map(([latent, feature, c]) => ({ latent, feature, cos: c })), { id: "pairs" }));
  const custom = lat.map((l) => d.feature_order.map((f) => [l, f]));
  return Promise.all([
    plot("cosine", [{ type: "heatmap", z: cos, customdata: custom, colorscale: "RdBu", zmin: -1, zmax: 1, reversescale: true,
      hovertemplate: "latent %{customdata[0]}<br>feature %{customdata[1]}<br>cos %{z:.3f}<extra></extra>", colorbar: { title: { text: "cos" } } }],
    { title: { text: `Decoder atoms × true features: cosine, the ${d.pairs.length} matched pairs first (diagonal)${ofAll(lat.length, d.latent_order.length, "latents")}` },
      xaxis: { title: { text: "true feature (matched order)" } }, yaxis: { title: { text: "latent (matched order)" }, autorange: "reversed" } }),
    saeScatter("shrinkage", a, rows, [["shrinkage_gamma", 1], ["magnitude_ratio", 1]], label)]);
}

function claimsPage(main) {
  const idx = MONOSEM.data.index, names = new Set(idx.studies.map((s) => s.name)), saes = new Set(idx.saes.map((s) => s.name));
  const rows = idx.claims.map((c) => ({ ...c, verdict: verdictOf(c) }));
  main.append(h("h1", {}, "Claims"), h("p", { class: "facts" }, `${rows.filter((c) => c.holds === true).length} of ${rows.length} hold; `,
    "each judged on all seeds by a criterion fixed in advance (src/monosem/claims/, sae_eval.py)."),
  sortableTable([{ key: "claim", text: true }, { key: "verdict", text: true, cell: (c) => verdict(c) },
    { key: "stability", text: true }, { key: "criterion", text: true },
    { key: "evidence", text: true }, { key: "studies", text: true, cell: (c) => (c.studies || []).map((s, i) => [i ? ", " : "",
      names.has(s) ? link(s, ["study", s]) : saes.has(s) ? link(s, ["saes", s]) : s]) }], rows, { filter: "verdict", id: "claims" }));
}

// --- routing ----------------------------------------------------------------------------------------------
const ROUTES = { "": home, study: studyPage, model: modelPage, neuron: neuronPage, saes: saesPage, sae: saePage, claims: claimsPage };

async function route(hash = location.hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").filter((p, i) => p || i === 0).map(decodeURIComponent);
  const [kind, ...args] = parts.length ? parts : [""];
  const main = document.getElementById("main"), crumbs = document.getElementById("crumbs");
  document.body.dataset.ready = "";
  main.replaceChildren();
  crumbs.replaceChildren(...args.map((a, i) => h("span", {}, i ? `· ${a}` : `${kind} ${a}`)));
  try {
    if (!MONOSEM.data.index) fail("data/index.js did not load (re-run the report stage)");
    await (ROUTES[kind] || fail(`no page ${kind}`))(main, args);
    document.body.dataset.ready = hash || "#/";
  } catch (err) {
    main.append(h("p", { class: "error" }, `error: ${err.message}`));
    console.error(err);
    document.body.dataset.ready = "error";
  }
}
// Where the hash cannot change (a sandboxed frame: MLflow's UI shows an HTML artifact that way), links and clicks
// on plots still move between pages: the page is drawn without the URL following.
function go(target) {
  const hash = Array.isArray(target) ? "#/" + target.map(enc).join("/") : target;
  location.hash = hash;
  if (location.hash !== hash) route(hash);
}
document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest('a[href^="#/"]');
  if (a && !(ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button)) { ev.preventDefault(); go(a.getAttribute("href")); }
});
window.addEventListener("hashchange", () => route());
window.addEventListener("DOMContentLoaded", () => route());
