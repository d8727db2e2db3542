// The rebalancing dashboard: a small single page over the JSON API (no build step).
// The API key lives in sessionStorage only (never in a URL). Views are in views.js.
"use strict";

const KEY = "optimizer.apiKey";
const main = document.getElementById("main");

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) sessionStorage.removeItem(KEY);
    throw new ApiError(response.status, data);
  }
  return data;
}

const execute = (capability, request) => api("POST", "/v1/execute", { capability, request });

function setPage(title, ...children) {
  document.title = `${title} · Optimizer`;
  main.replaceChildren(el("h1", {}, title), ...children);
  drawCharts();
  main.focus();
}

async function latestPack() {
  const packs = await api("GET", "/v1/packs");
  if (!packs.length) throw new Error("no pricing pack is stored; import one with `optimizer packs import`");
  return packs.reduce((a, b) => (b.asof > a.asof || (b.asof === a.asof && b.id > a.id) ? b : a));
}

// --- pages ---------------------------------------------------------------------------------

function signIn(message) {
  document.getElementById("nav").hidden = true;
  const input = el("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off", required: true });
  const status = el("div", { "aria-live": "polite" }, message ? errorBox(new Error(message)) : null);
  const form = el("form", { class: "signin card", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    try {
      await api("GET", "/v1/portfolios");
      route();
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  } },
  el("label", { for: "api-key" }, "API key", input),
  el("p", { class: "muted" }, "From `optimizer users add NAME`. Kept in this browser tab only."),
  el("div", { class: "actions" }, el("button", { type: "submit" }, "Sign in")), status);
  setPage("Sign in", form);
}

async function portfolios() {
  const rows = await api("GET", "/v1/portfolios");
  setPage("Your portfolios", rows.length
    ? table("Portfolios you own", [
      ["Portfolio", (p) => el("a", { href: `#/portfolio/${encodeURIComponent(p.id)}` }, p.id)],
      ["Description", "description"], ["Holdings", "n_symbols", true], ["Cash", (p) => money(p.cash), true],
      ["", (p) => el("a", { href: `#/optimize/${encodeURIComponent(p.id)}` }, "Optimize")],
      ["", (p) => el("a", { href: `#/preferences/${encodeURIComponent(p.id)}` }, "Preferences")],
    ], rows)
    : el("p", { class: "notice" }, "You own no portfolios yet."));
}

async function portfolioPage(id) {
  const [detail, pack, stored] = await Promise.all([api("GET", `/v1/portfolios/${encodeURIComponent(id)}`), latestPack(),
    api("GET", `/v1/portfolios/${encodeURIComponent(id)}/preferences`)]);
  const sections = [
    el("p", {}, `Priced on ${pack.id} (as of ${pack.asof}) · version ${detail.version} · `,
      el("a", { href: `#/optimize/${encodeURIComponent(id)}` }, "Optimize this portfolio")),
  ];
  const drift = detail.target ? await execute("optimizer.check_drift", { portfolio_id: id, pricing_pack_id: pack.id })
    .catch((err) => err) : null;
  const holdings = drift && !(drift instanceof Error)
    ? drift.drifts.filter((d) => d.symbol !== "CASH" && d.shares)
    : detail.positions;
  sections.push(el("section", { class: "card", id: "holdings" }, el("h2", {}, "Holdings"),
    table("Holdings", [["Symbol", "symbol"], ["Shares", "shares", true],
      ["Value", (h) => money(h.value), true], ["Weight", (h) => pct(h.current_weight_pct), true]], holdings),
    el("p", {}, `Cash: ${money(detail.cash)}`)));

  const driftCard = el("section", { class: "card", id: "drift" }, el("h2", {}, "Current vs target"));
  if (!detail.target) {
    driftCard.append(el("p", { class: "notice" }, "No target is set for this portfolio, so drift cannot be measured. "
      + `Set one with \`optimizer targets set ${id} --weights FILE.csv\`.`));
  } else if (drift instanceof Error) {
    driftCard.append(errorBox(drift));
  } else {
    driftCard.append(
      el("p", { id: "verdict", class: drift.rebalance_due ? "due" : "ok" },
        drift.rebalance_due ? "Rebalance due" : "No rebalance due"),
      el("p", {}, drift.explanation),
      drift.rebalance_due ? rebalanceButton(id, pack.id, detail.target.policy_id) : "",
      chartWithTable("drift-chart", [
        { type: "bar", name: "Current", x: drift.drifts.map((d) => d.symbol), y: drift.drifts.map((d) => d.current_weight_pct) },
        { type: "bar", name: "Target", x: drift.drifts.map((d) => d.symbol), y: drift.drifts.map((d) => d.target_weight_pct) },
      ], { title: "Weights, % of value", barmode: "group", yaxis: { ticksuffix: "%" } },
      table("Current vs target weights", [["Symbol", "symbol"], ["Current", (d) => pct(d.current_weight_pct), true],
        ["Target", (d) => pct(d.target_weight_pct), true], ["Drift (pp)", (d) => num(d.drift_pct), true],
        ["Outside band", (d) => (d.breached ? "yes" : "no")]], drift.drifts)));
  }
  sections.push(driftCard);

  const mix = await execute("optimizer.analyze_impact", { portfolio_id: id, pricing_pack_id: pack.id, proposed_trades: [] })
    .catch((err) => err);
  const mixCard = el("section", { class: "card", id: "mix" }, el("h2", {}, "Sector mix"));
  const classCard = el("section", { class: "card", id: "asset-mix" }, el("h2", {}, "Asset-class mix"));
  const classes = await api("GET", `/v1/portfolios/${encodeURIComponent(id)}/mix?pricing_pack_id=${encodeURIComponent(pack.id)}`)
    .catch((err) => err);
  if (classes instanceof Error) {
    classCard.append(errorBox(classes));
  } else {
    const lines = classes.asset_classes;
    classCard.append(chartWithTable("asset-class-chart",
      [{ type: "pie", hole: 0.45, sort: false, labels: lines.map((c) => c.name), values: lines.map((c) => c.weight_pct),
        textinfo: "label+percent", automargin: true, hovertemplate: "%{label}: %{value:.2f}%<extra></extra>" }],
      { title: "Asset classes, % of value (cash included)", showlegend: false, margin: { l: 30, r: 30, t: 70, b: 30 } },
      table("Asset-class weights", [["Asset class", "name"], ["Value", (c) => money(c.value), true],
        ["Weight", (c) => pct(c.weight_pct), true], ["Holdings", (c) => c.symbols.length, true]], lines)));
  }
  if (mix instanceof Error) {
    mixCard.append(errorBox(mix));
  } else {
    const sectors = Object.entries(mix.before.sector_weights_pct).map(([sector, weight]) => ({ sector, weight }));
    mixCard.append(chartWithTable("sector-chart",
      [{ type: "bar", x: sectors.map((s) => s.sector), y: sectors.map((s) => s.weight), name: "Weight" }],
      { title: "Sector weights, % of value", yaxis: { ticksuffix: "%" } },
      table("Sector weights", [["Sector", "sector"], ["Weight", (s) => pct(s.weight), true]], sectors)));
  }
  sections.push(el("div", { class: "mixes" }, mixCard, classCard));

  const prefs = el("section", { class: "card", id: "preferences" }, el("h2", {}, "Rebalancing preferences"));
  prefs.append(preferencesTable(stored, detail.target),
    el("p", {}, el("a", { href: `#/preferences/${encodeURIComponent(id)}` }, "Edit preferences")));
  sections.push(prefs);

  const history = await api("GET", `/v1/portfolios/${encodeURIComponent(id)}/history`);
  const historyCard = el("section", { class: "card", id: "history" }, el("h2", {}, "History"));
  if (!history.length) historyCard.append(el("p", { class: "muted" }, "No rebalance has been booked or rejected yet."));
  for (const h of history.slice().reverse()) {
    historyCard.append(el("h3", {}, `#${h.id} ${h.status} on ${h.asof}`),
      el("p", {}, `${h.trade_count} trades worth ${money(h.total_trade_value)}, costs ${money(h.estimated_costs)}; `
        + `by ${h.approved_by || "–"}${h.note ? `: “${h.note}”` : ""}`),
      chartWithTable(`history-${h.id}`, [
        { type: "bar", name: "Before", x: h.weights.map((w) => w.symbol), y: h.weights.map((w) => w.before_pct) },
        { type: "bar", name: "After", x: h.weights.map((w) => w.symbol), y: h.weights.map((w) => w.after_pct) },
      ], { title: `Rebalance #${h.id}: weights before and after, %`, barmode: "group", yaxis: { ticksuffix: "%" } },
      table(`Rebalance #${h.id} weights`, [["Symbol", "symbol"], ["Before", (w) => pct(w.before_pct), true],
        ["After", (w) => pct(w.after_pct), true]], h.weights)));
  }
  sections.push(historyCard);
  setPage(`Portfolio ${detail.id}`, ...sections);
}

// A pattern run's outcome: waiting (with a link to approvals), completed, or why it stopped.
function runStatus(run) {
  const text = `Run ${run.run_id}: ${run.status.replaceAll("_", " ")}.`;
  if (run.halted) return el("div", { class: "error", role: "alert" }, `${text} ${run.halted.reason}`);
  return el("p", { class: "notice" }, `${text} `,
    run.status === "waiting_for_approval" ? el("a", { href: "#/approvals" }, "Go to approvals") : null);
}

// Start drift_rebalance: trades back to the target, booked once a person approves them.
function rebalanceButton(id, packId, policyId) {
  const status = el("div", { id: "rebalance-status", "aria-live": "polite" });
  const inputs = { portfolio_id: id, pricing_pack_id: packId };
  if (policyId) inputs.policy_id = policyId;
  const button = el("button", { type: "button", id: "rebalance", onclick: async () => {
    button.disabled = true;
    try {
      const run = await api("POST", "/v1/runs", { pattern: "drift_rebalance", inputs });
      status.replaceChildren(runStatus(run));
    } catch (err) {
      status.replaceChildren(errorBox(err));
      button.disabled = false;
    }
  } }, "Rebalance to target");
  return el("div", {}, el("div", { class: "actions" }, button), status);
}

function enumOf(schema, name) {
  const prop = schema.$defs.PolicyOverrides.properties[name];
  const found = (prop.anyOf || [prop]).find((p) => p.enum);
  return found ? found.enum : [];
}

const FRONTIER_POINTS = 15;

async function optimizePage(id) {
  const [detail, pack, policies, capabilities] = await Promise.all([
    api("GET", `/v1/portfolios/${encodeURIComponent(id)}`), latestPack(), api("GET", "/v1/policies"),
    api("GET", "/v1/capabilities"),
  ]);
  const schema = capabilities.find((c) => c.name === "optimizer.propose_trades").input_schema;
  const select = (name, options, blank) => el("select", { id: name, name },
    blank ? el("option", { value: "" }, blank) : null, options.map((o) => el("option", { value: o }, o)));
  const number = (name, hint) => el("input", { id: name, name, type: "number", step: "any", min: "0", placeholder: hint });
  const fields = {
    policy_id: select("policy_id", policies.map((p) => p.id)),
    method: select("method", enumOf(schema, "method"), "template's method"),
    risk_model: select("risk_model", enumOf(schema, "risk_model"), "template's risk model"),
    max_single_position_pct: number("max_single_position_pct", "template's"),
    max_sector_pct: number("max_sector_pct", "template's"),
    max_turnover_pct: number("max_turnover_pct", "template's"),
    max_tracking_error_pct: number("max_tracking_error_pct", "template's"),
  };
  const labels = {
    policy_id: "Policy template", method: "Method", risk_model: "Risk model",
    max_single_position_pct: "Max position %", max_sector_pct: "Max sector %",
    max_turnover_pct: "Max turnover %", max_tracking_error_pct: "Max tracking error %",
  };
  const out = el("div", { id: "result", "aria-live": "polite" });
  const request = () => {
    const policy = {};
    for (const [name, field] of Object.entries(fields)) {
      if (name === "policy_id" || field.value === "") continue;
      policy[name] = field.type === "number" ? Number(field.value) : field.value;
    }
    return { portfolio_id: id, pricing_pack_id: pack.id, policy_id: fields.policy_id.value, policy };
  };
  const form = el("form", { class: "grid", id: "optimize-form", onsubmit: async (event) => {
    event.preventDefault();
    out.replaceChildren(el("p", { class: "muted" }, "Optimizing…"));
    try {
      // The frontier is drawn on this page only; the approval run proposes the same trades without it.
      const proposal = await execute("optimizer.propose_trades", { ...request(), frontier_points: FRONTIER_POINTS, explain_limits: true });
      out.replaceChildren(...proposalView(proposal, submitButton(request())));
      drawCharts();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  } },
  Object.entries(fields).map(([name, field]) => el("label", { for: name }, labels[name], field)),
  el("div", { class: "actions" }, el("button", { type: "submit" }, "Propose trades")));
  setPage(`Optimize ${detail.id}`,
    el("p", {}, `On ${pack.id}. Blank limits keep the template's. `,
      el("a", { href: `#/portfolio/${encodeURIComponent(id)}` }, "Back to the portfolio")),
    el("section", { class: "card" }, form), out);
}

// Submit a proposal's request to policy_rebalance, which waits for approval above its threshold.
function submitButton(request) {
  const submit = el("div", { id: "submit-status", "aria-live": "polite" });
  return el("div", {},
    el("div", { class: "actions" }, el("button", { type: "button", class: "secondary", id: "submit-approval", onclick: async (event) => {
        event.target.disabled = true;
        try {
          const run = await api("POST", "/v1/runs", { pattern: "policy_rebalance", inputs: request });
          submit.replaceChildren(runStatus(run));
        } catch (err) {
          submit.replaceChildren(errorBox(err));
          event.target.disabled = false;
        }
      } }, "Submit for approval")),
    submit);
}

// A portfolio's preferences as a table (the target, when given, is shown with them).
function preferencesTable(stored, target) {
  const p = stored.preferences;
  const rows = [
    { name: "Drift band", value: `±${num(p.band_pct)} pp` },
    { name: "Relative band", value: p.relative_band_pct === null ? "none" : `±${num(p.relative_band_pct)}% of each target` },
    { name: "Schedule", value: p.schedule === "none" ? "none (bands only)" : p.schedule },
    { name: "Approval threshold", value: p.approval_threshold === null ? "the policy's (else $10,000.00)" : money(p.approval_threshold) },
    { name: "Restricted (no buys)", value: p.restricted_symbols.join(", ") || "none" },
    { name: "Frozen (no trades)", value: p.frozen_symbols.join(", ") || "none" },
    { name: "Version", value: stored.version ? `${stored.version}, by ${stored.changed_by || "operator"}` : "never set (defaults)" },
  ];
  if (target !== undefined) {
    rows.unshift({ name: "Target", value: target ? `version ${target.version} (${target.policy_id || "no policy"}, ${target.source})` : "none" });
  }
  return table("Preferences", [["Setting", "name"], ["Value", "value"]], rows);
}

async function preferencesPage(id) {
  const path = `/v1/portfolios/${encodeURIComponent(id)}/preferences`;
  const [stored, openapi] = await Promise.all([api("GET", path), api("GET", "/openapi.json")]);
  // The allowed values come from the API's own schema (the PUT body), not a copy here.
  const schema = openapi.paths["/v1/portfolios/{portfolio_id}/preferences"].put.requestBody.content["application/json"].schema;
  const p = stored.preferences;
  const number = (name, value, hint) => el("input", { id: name, name, type: "number", step: "any", placeholder: hint,
    value: value === null ? "" : String(value) });
  const text = (name, values) => el("input", { id: name, name, type: "text", value: values.join(", "), placeholder: "none",
    autocapitalize: "characters", spellcheck: "false" });
  const fields = {
    band_pct: number("band_pct", p.band_pct, "5"),
    relative_band_pct: number("relative_band_pct", p.relative_band_pct, "none"),
    schedule: el("select", { id: "schedule", name: "schedule" }, schema.properties.schedule.enum.map((o) =>
      el("option", { value: o, selected: o === p.schedule }, o))),
    approval_threshold: number("approval_threshold", p.approval_threshold, "the policy's"),
    restricted_symbols: text("restricted_symbols", p.restricted_symbols),
    frozen_symbols: text("frozen_symbols", p.frozen_symbols),
  };
  const labels = {
    band_pct: "Drift band (pp)", relative_band_pct: "Relative band (% of target)", schedule: "Schedule",
    approval_threshold: "Approval threshold ($)", restricted_symbols: "Restricted: never bought", frozen_symbols: "Frozen: never traded",
  };
  const status = el("div", { id: "preferences-status", "aria-live": "polite" });
  const current = el("div", { id: "preferences-current" }, preferencesTable(stored));
  const history = el("div", { id: "preferences-history" });
  const showHistory = async () => {
    const versions = await api("GET", `${path}/history`);
    history.replaceChildren(versions.length
      ? table("Earlier versions", [["Version", "version", true], ["By", (v) => v.changed_by || "operator"], ["At", "changed_at"],
        ["Band", (v) => `${num(v.preferences.band_pct)} pp`], ["Schedule", (v) => v.preferences.schedule],
        ["Approval", (v) => (v.preferences.approval_threshold === null ? "policy's" : money(v.preferences.approval_threshold))],
        ["Restricted", (v) => v.preferences.restricted_symbols.join(", ") || "–"],
        ["Frozen", (v) => v.preferences.frozen_symbols.join(", ") || "–"]], versions.slice().reverse())
      : el("p", { class: "muted" }, "No change has been saved yet."));
  };
  const body = () => {
    const symbols = (field) => field.value.split(",").map((v) => v.trim()).filter((v) => v);
    const numberOrNull = (field) => (field.value.trim() === "" ? null : Number(field.value));
    return {
      band_pct: fields.band_pct.value.trim() === "" ? 5 : Number(fields.band_pct.value),
      relative_band_pct: numberOrNull(fields.relative_band_pct),
      schedule: fields.schedule.value,
      approval_threshold: numberOrNull(fields.approval_threshold),
      restricted_symbols: symbols(fields.restricted_symbols),
      frozen_symbols: symbols(fields.frozen_symbols),
    };
  };
  const form = el("form", { class: "grid", id: "preferences-form", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const saved = await api("PUT", path, body());
      status.replaceChildren(el("p", { class: "ok" }, `Saved as version ${saved.version}.`));
      current.replaceChildren(preferencesTable(saved));
      await showHistory();
    } catch (err) {
      status.replaceChildren(errorBox(err));
    } finally {
      button.disabled = false;
    }
  } },
  Object.entries(fields).map(([name, field]) => el("label", { for: name, title: schema.properties[name].description },
    labels[name], field)),
  el("div", { class: "actions" }, el("button", { type: "submit" }, "Save preferences")));
  await showHistory();
  setPage(`Preferences of ${id}`,
    el("p", {}, "Used by drift checks, proposals and booking when a request does not set its own: the request first, then these, "
      + "then the policy template (approval threshold), then the defaults. ",
      el("a", { href: `#/portfolio/${encodeURIComponent(id)}` }, "Back to the portfolio")),
    el("section", { class: "card" }, form, status),
    el("section", { class: "card", id: "preferences-now" }, el("h2", {}, "Now in force"), current),
    el("section", { class: "card" }, el("h2", {}, "History"), history));
}

async function approvalsPage() {
  const runs = await api("GET", "/v1/runs?limit=100");
  const waiting = runs.filter((r) => r.status === "waiting_for_approval");
  const records = await Promise.all(waiting.map((r) => api("GET", `/v1/runs/${encodeURIComponent(r.run_id)}`)));
  const cards = records.map((run) => {
    const gate = run.report.pending_approval;
    const note = el("textarea", { id: `note-${run.run_id}`, rows: "2", maxlength: "2000" });
    const result = el("div", { class: "result", "aria-live": "polite" });
    const buttons = el("div", { class: "actions" });
    const decide = (verb) => async () => {
      buttons.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      try {
        const after = await api("POST", `/v1/runs/${encodeURIComponent(run.run_id)}/${verb}`, { note: note.value || null });
        buttons.remove();
        // A booking step (drift_rebalance) says what became of the trades: booked or rejected.
        const booking = after.outputs && after.outputs.booking;
        const booked = booking && booking.status
          ? `; ${booking.status}${booking.version_after ? ` as version ${booking.version_after}` : ""}`
            + `${booking.rebalance_id ? ` (rebalance #${booking.rebalance_id})` : ""}`
          : "";
        result.replaceChildren(el("p", { class: after.status === "rejected" ? "due" : "ok" },
          `Run ${run.run_id}: ${after.status.replaceAll("_", " ")}${booked}`));
      } catch (err) {
        result.replaceChildren(errorBox(err));
        buttons.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      }
    };
    buttons.append(el("button", { type: "button", onclick: decide("approve") }, "Approve"),
      el("button", { type: "button", class: "secondary", onclick: decide("reject") }, "Reject"));
    const shown = Object.entries(gate.show || {}).map(([name, value]) => ({ name: name.replaceAll("_", " "), value }));
    return el("section", { class: "card approval", "data-run": run.run_id },
      el("h2", {}, `${run.pattern_id} · ${run.inputs.portfolio_id || ""} · run ${run.run_id}`),
      el("p", {}, gate.message), el("p", { class: "muted" }, `Why: ${gate.reason}`),
      table("What is being approved", [["Item", "name"], ["Value", (r) => (typeof r.value === "number" ? num(r.value) : String(r.value)), true]], shown),
      el("label", { for: `note-${run.run_id}` }, "Note", note), buttons, result);
  });
  setPage("Approvals", ...(cards.length ? cards : [el("p", { class: "notice" }, "Nothing waits for your approval.")]));
}

// --- routing -------------------------------------------------------------------------------

async function route() {
  if (!sessionStorage.getItem(KEY)) return signIn();
  document.getElementById("nav").hidden = false;
  const [, page, id] = (location.hash.replace(/^#/, "") || "/").split("/").map(decodeURIComponent);
  main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  try {
    if (page === "portfolio" && id) await portfolioPage(id);
    else if (page === "optimize" && id) await optimizePage(id);
    else if (page === "preferences" && id) await preferencesPage(id);
    else if (page === "approvals") await approvalsPage();
    else await portfolios();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return signIn(err.message);
    setPage("Something went wrong", errorBox(err), el("p", {}, el("a", { href: "#/" }, "Back to your portfolios")));
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.hash = "#/";
  signIn();
});
window.addEventListener("hashchange", route);
route();
