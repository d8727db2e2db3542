// Views shared by the dashboard (app.js) and the one-file proposal report
// (`optimizer report ID --html FILE`): DOM helpers, tables, Plotly charts, the proposal view.
// Every value is set as text, never parsed as HTML; every chart has its numbers in a table.
"use strict";

// --- DOM helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const pct = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(2)}%`);
const num = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", {
  minimumFractionDigits: d, maximumFractionDigits: d }));
const money = (v) => (v === null || v === undefined ? "–" : `$${num(v)}`);

function errorBox(err) {
  return el("div", { class: "error", role: "alert" }, err.message || String(err));
}

// A table: columns are [heading, key or function, numeric?].
function table(caption, columns, rows) {
  const head = el("tr", {}, columns.map(([h, , n]) => el("th", { scope: "col", class: n ? "num" : null }, h)));
  const body = rows.map((row) => el("tr", {}, columns.map(([, get, n]) => {
    const value = typeof get === "function" ? get(row) : row[get];
    return el("td", { class: n ? "num" : null }, value instanceof Node ? value : value ?? "–");
  })));
  return el("div", { class: "table-wrap" },
    el("table", {}, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body)));
}

const pendingCharts = [];

function drawCharts() {
  for (const draw of pendingCharts.splice(0)) draw();
}

// A Plotly chart with its data table beside it (the table is what screen readers use).
function chartWithTable(id, traces, layout, dataTable) {
  const chart = el("div", { class: "chart", id, role: "img", "aria-label": `${layout.title}: the numbers are in the table beside it` });
  const pair = el("div", { class: "pair" }, chart, dataTable);
  // Drawn once on the page (setPage or drawCharts): detached, Plotly would size it 700px wide.
  pendingCharts.push(() => {
    if (!window.Plotly) {
      chart.replaceWith(errorBox(new Error("the chart library did not load; the numbers are in the table")));
      return;
    }
    window.Plotly.newPlot(chart, traces, {
      margin: { l: 50, r: 10, t: 40, b: 60 }, legend: { orientation: "h" }, autosize: true, ...layout,
      title: { text: layout.title, font: { size: 14 } },
      xaxis: { automargin: true, ...layout.xaxis }, yaxis: { automargin: true, ...layout.yaxis },
    }, { responsive: true, displayModeBar: false });
  });
  return pair;
}

// The efficient frontier under the policy's limits, with the current and proposed portfolios on it.
function frontierView(f) {
  const marker = (name, r) => ({ type: "scatter", mode: "markers+text", name, x: [r.volatility_pct], y: [r.expected_return_pct],
    text: [name.toLowerCase()], textposition: "top center", marker: { size: 12 } });
  const rows = [
    ...f.points.map((r, i) => ({ portfolio: `Frontier ${i + 1}`, ...r })),
    { portfolio: "Current", ...f.current }, { portfolio: "Proposed", ...f.proposed },
  ];
  return el("section", { class: "card", id: "frontier" }, el("h2", {}, "Efficient frontier"),
    el("p", { class: "muted" }, `Every point respects: ${f.limits}.`),
    chartWithTable("frontier-chart", [
      { type: "scatter", mode: "lines+markers", name: "Efficient frontier", x: f.points.map((r) => r.volatility_pct),
        y: f.points.map((r) => r.expected_return_pct) },
      marker("Current", f.current), marker("Proposed", f.proposed),
    ], { title: "Efficient frontier, % a year", xaxis: { title: { text: "Volatility %" } }, yaxis: { title: { text: "Expected return %" } } },
    table("Efficient frontier", [["Portfolio", "portfolio"], ["Expected return", (r) => pct(r.expected_return_pct), true],
      ["Volatility", (r) => pct(r.volatility_pct), true], ["Sharpe", (r) => num(r.sharpe, 4), true]], rows)));
}

// A propose_trades result: figures before and after, trades, costs, constraints in words.
// ``action`` (optional) is shown in the summary card, e.g. the dashboard's submit button.
function proposalView(p, action) {
  const metrics = [
    { figure: "Expected return", before: pct(p.before.expected_return_pct), after: pct(p.after.expected_return_pct) },
    { figure: "Volatility", before: pct(p.before.volatility_pct), after: pct(p.after.volatility_pct) },
    { figure: "Sharpe", before: num(p.before.sharpe, 4), after: num(p.after.sharpe, 4) },
    { figure: `Tracking error vs ${p.benchmark}`, before: pct(p.te_before_pct), after: pct(p.te_after_pct) },
  ];
  return [
    el("section", { class: "card", id: "summary" }, el("h2", {}, `Proposal: ${p.method} under ${p.policy_id}`),
      el("dl", { class: "metrics" },
        [["Trades", p.trade_count], ["Traded value", money(p.total_trade_value)], ["Estimated costs", money(p.estimated_costs)],
          ["Cost", `${num(p.cost_bps)} bps`], ["Turnover", pct(p.turnover_pct)], ["Constraints met", p.constraints_met ? "yes" : "no"]]
          .map(([t, d]) => el("div", {}, el("dt", {}, t), el("dd", {}, d)))),
      p.warnings.length ? el("ul", { class: "plain" }, p.warnings.map((w) => el("li", {}, w))) : null,
      action || null),
    el("section", { class: "card", id: "risk-return" }, el("h2", {}, "Before and after"),
      chartWithTable("risk-return-chart", [
        { type: "scatter", mode: "markers+text", name: "Current", x: [p.before.volatility_pct], y: [p.before.expected_return_pct], text: ["current"], textposition: "top center", marker: { size: 12 } },
        { type: "scatter", mode: "markers+text", name: "Proposed", x: [p.after.volatility_pct], y: [p.after.expected_return_pct], text: ["proposed"], textposition: "top center", marker: { size: 12 } },
      ], { title: "Expected return vs volatility, % a year", xaxis: { title: { text: "Volatility %" } }, yaxis: { title: { text: "Expected return %" } } },
      table("Before and after", [["Figure", "figure"], ["Before", "before", true], ["After", "after", true]], metrics))),
    p.efficient_frontier ? frontierView(p.efficient_frontier) : null,
    el("section", { class: "card", id: "trades" }, el("h2", {}, "Trades"),
      table("Proposed trades", [["Symbol", "symbol"], ["Action", "action"], ["Quantity", "quantity", true],
        ["Price", (t) => num(t.price, 3), true], ["Value", (t) => money(t.trade_value), true],
        ["Cost", (t) => money(t.estimated_cost), true], ["Weight now", (t) => pct(t.current_weight_pct), true],
        ["Weight after", (t) => pct(t.target_weight_pct), true], ["Sector", "sector"]], p.trades)),
    el("section", { class: "card", id: "constraints" }, el("h2", {}, "Constraints"),
      el("p", {}, p.binding_constraints.length
        ? `Binding (at their limit): ${p.binding_constraints.map((c) => c.replaceAll("_", " ").replace(":", " for ")).join("; ")}.`
        : "No constraint is at its limit."),
      p.binding_explanations ? el("ul", { class: "plain", id: "binding-costs" }, p.binding_explanations.map((e) => el("li", {}, e.explanation))) : null,
      table("Constraints", [["Constraint", (c) => c.constraint.replaceAll("_", " ")], ["Limit", (c) => num(c.limit, 4), true],
        ["Value", (c) => num(c.value, 4), true], ["Met", (c) => (c.met ? "yes" : "NO")]], p.constraints)),
    p.tax ? taxView(p.tax) : null,
  ];
}

// A taxable account's tax preview: the totals, the lots sold and the wash-sale blocks (an estimate).
function taxView(t) {
  const totals = t.totals;
  return el("section", { class: "card", id: "tax" }, el("h2", {}, "Tax preview (estimate)"),
    el("p", { class: "muted" }, t.disclaimer),
    el("dl", { class: "metrics" },
      [["Estimated tax", money(totals.estimated_tax)], ["Short-term gains", money(totals.short_term_gains)],
        ["Short-term losses", money(totals.short_term_losses)], ["Long-term gains", money(totals.long_term_gains)],
        ["Long-term losses", money(totals.long_term_losses)], ["Net realized gain", money(totals.net_realized_gain)],
        ["Tax saved by losses", money(totals.tax_saved_by_losses)]]
        .map(([d, v]) => el("div", {}, el("dt", {}, d), el("dd", {}, v)))),
    t.comparison ? el("p", {}, `Tax-blind, the same policy would realize an estimated ${money(t.comparison.tax_blind_estimated_tax)} ` +
      `of tax against ${money(t.comparison.tax_aware_estimated_tax)} here (${t.comparison.objective} ` +
      `${num(t.comparison.tax_blind_objective, 4)} vs ${num(t.comparison.tax_aware_objective, 4)}).`) : null,
    t.short_term_gains_forced.length ? el("p", {}, `Forced sales realizing a short-term gain: ${t.short_term_gains_forced.join(", ")}.`) : null,
    table("Lots sold", [["Symbol", "symbol"], ["Lot", "lot_no", true], ["Shares", "shares", true], ["Acquired", "acquired"],
      ["Term", "term"], ["Basis", (r) => money(r.cost_basis), true], ["Proceeds", (r) => money(r.proceeds), true],
      ["Gain", (r) => money(r.gain), true], ["Est. tax", (r) => money(r.estimated_tax), true]], t.lots_sold),
    t.wash_sale_blocks.length ? table("Wash-sale blocks", [["Symbol", "symbol"], ["Rule", (b) => b.rule.replaceAll("_", " ")],
      ["Since", "since"], ["Until", "until"]], t.wash_sale_blocks) : null,
    t.warnings.length ? el("ul", { class: "plain" }, t.warnings.map((w) => el("li", {}, w))) : null);
}
