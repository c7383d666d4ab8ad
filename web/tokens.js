// The Tokens page: create (secret shown once), list, select for bulk actions, revoke.
"use strict";

import {
  api, h, timeEl, field, select, placeError, clearErrors, showError, confirmAction, badge,
} from "./dom.js";

const TIERS = [["inherit", "Inherit (crew default)"], ["standard", "Standard"], ["strict", "Strict"]];
const EXPIRY = [["", "Never"], ["7", "7 days"], ["30", "30 days"], ["90", "90 days"], ["365", "1 year"]];

/** Admins and owners see and act on every token of the crew. */
function seesCrew(crew) {
  return crew.role === "admin" || crew.role === "owner";
}

/** Render the Tokens page into `main`. */
export function tokensPage(main, session) {
  const state = { tokens: [], selected: new Set(), showAll: false };
  const list = h("section", { "aria-labelledby": "tokens-list-title" });
  main.append(
    h("h1", {}, "Tokens"),
    createSection(session, () => load(session, state, list)),
    list,
  );
  load(session, state, list);
}

function createSection(session, reload) {
  const fields = {
    crew: field("Crew", select("token-crew", session.crews.map((c) => [c.id, c.name]), session.crew.id)),
    name: field("Name", h("input", {
      id: "token-name", maxlength: 100, required: true, autocomplete: "off",
      placeholder: "Machine/Service - Project/Team/Environment",
    })),
    redaction: field("Redaction", select("token-redaction", TIERS, "inherit"),
      "Which request headers the traffic inspector hides for tunnels this token opens."),
    region: field("Preferred region", h("input", { id: "token-region", autocomplete: "off", placeholder: "optional, e.g. local" })),
    server: field("CLI server", h("input", { id: "token-server", type: "url", autocomplete: "off", placeholder: "optional, e.g. https://berth.example.net" })),
    expires_in_days: field("Expires", select("token-expiry", EXPIRY, "")),
  };
  const formError = h("p", { class: "error", role: "alert", hidden: true });
  const form = h("form", { id: "create-token", novalidate: true, class: "grid" },
    Object.values(fields).map((f) => f.wrap), formError,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create token")));
  const shown = newTokenPanel();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    shown.hide();
    const name = fields.name.input.value.trim();
    if (!name) {
      placeError({ field: "name", message: "Give the token a name, e.g. \"MacBook Pro - Development\"." }, fields, formError);
      return;
    }
    const body = { name, crew: Number(fields.crew.input.value), redaction: fields.redaction.input.value };
    const region = fields.region.input.value.trim();
    const server = fields.server.input.value.trim();
    const days = fields.expires_in_days.input.value;
    if (region) body.region = region;
    if (server) body.server = server;
    if (days) body.expires_in_days = Number(days);
    try {
      const reply = await api("POST", "/tokens", body);
      form.reset();
      fields.crew.input.value = session.crew.id;
      shown.show(reply);
      reload();
    } catch (failure) {
      // A name clash (409) is the name field's problem, though the message names no field.
      if (failure.status === 409) failure.field = "name";
      placeError(failure, fields, formError);
    }
  });
  return h("section", { "aria-labelledby": "create-title", class: "panel" },
    h("h2", { id: "create-title" }, "Create a token"), form, shown.el);
}

/** The panel that shows a new token's secret, once, with a Copy button. */
function newTokenPanel() {
  const secret = h("input", { id: "new-token-secret", readonly: true, class: "mono", "aria-describedby": "new-token-warning" });
  const status = h("span", { role: "status", class: "muted" });
  const copy = h("button", { type: "button", id: "copy-token" }, "Copy");
  const done = h("button", { type: "button", class: "secondary" }, "Done");
  const title = h("h3", {}, "");
  const el = h("div", { class: "notice", id: "new-token", hidden: true },
    title,
    h("p", { id: "new-token-warning", class: "warning" },
      "Copy this token now. It will not be shown again; if you lose it, revoke it and create another."),
    h("label", { for: "new-token-secret" }, "Token"),
    secret,
    h("div", { class: "actions" }, copy, done, status));
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(secret.value);
      status.textContent = "Copied.";
    } catch (err) {
      // The clipboard API needs a secure context; over plain http select the text instead.
      secret.select();
      status.textContent = document.execCommand("copy") ? "Copied." : "Press Ctrl+C to copy the selected token.";
    }
  });
  const hide = () => {
    secret.value = "";
    el.hidden = true;
  };
  done.addEventListener("click", () => {
    hide();
    document.getElementById("token-name").focus();
  });
  return {
    el,
    hide,
    show(reply) {
      title.textContent = `Token "${reply.token.name}" created`;
      secret.value = reply.secret;
      status.textContent = "";
      el.hidden = false;
      secret.focus();
      secret.select();
    },
  };
}

async function load(session, state, list) {
  const crew = session.crew;
  const query = `?crew=${crew.id}${seesCrew(crew) ? "&all=1" : ""}`;
  try {
    const { tokens } = await api("GET", `/tokens${query}`);
    state.tokens = tokens;
    const ids = new Set(tokens.map((t) => t.id));
    state.selected = new Set([...state.selected].filter((id) => ids.has(id)));
  } catch (failure) {
    list.replaceChildren(h("h2", { id: "tokens-list-title" }, "Tokens"), h("p", { class: "error", role: "alert" }, failure.message));
    return;
  }
  renderList(session, state, list);
}

function visible(state) {
  return state.tokens.filter((t) => state.showAll || t.status === "active");
}

function renderList(session, state, list) {
  const reload = () => load(session, state, list);
  const crewWide = seesCrew(session.crew);
  const tokens = visible(state);
  const showAll = h("input", { type: "checkbox", id: "show-inactive", checked: state.showAll });
  showAll.addEventListener("change", () => {
    state.showAll = showAll.checked;
    renderList(session, state, list);
  });
  const heading = crewWide ? `Every token of crew ${session.crew.name}` : `Your tokens in crew ${session.crew.name}`;
  const table = tokens.length === 0
    ? h("p", { class: "muted", id: "no-tokens" }, "No tokens yet.")
    : tokenTable(session, state, tokens, crewWide, reload, () => renderList(session, state, list));
  const title = h("h2", { id: "tokens-list-title", tabindex: "-1" }, heading);
  list.replaceChildren(
    title,
    h("div", { class: "check" }, showAll, h("label", { for: "show-inactive" }, "Show revoked and expired tokens")),
    bulkBar(state, reload),
    table,
  );
  // After a bulk action or a revoke the row that had focus is gone; land on the list.
  if (state.refocus) {
    state.refocus = false;
    title.focus();
  }
}

function tokenTable(session, state, tokens, crewWide, reload, redraw) {
  const selectable = tokens.filter((t) => t.status === "active");
  const all = h("input", {
    type: "checkbox", id: "select-all", "aria-label": "Select all tokens",
    checked: selectable.length > 0 && selectable.every((t) => state.selected.has(t.id)),
    disabled: selectable.length === 0,
  });
  all.indeterminate = !all.checked && selectable.some((t) => state.selected.has(t.id));
  all.addEventListener("change", () => {
    for (const t of selectable) {
      if (all.checked) state.selected.add(t.id);
      else state.selected.delete(t.id);
    }
    redraw();
    document.getElementById("select-all").focus();
  });
  const head = h("tr", {},
    h("th", { scope: "col", class: "pick" }, all), h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Crew"),
    crewWide ? h("th", { scope: "col" }, "Owner") : null,
    h("th", { scope: "col" }, "Created"), h("th", { scope: "col" }, "Last used"),
    h("th", { scope: "col" }, "Settings"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Actions"));
  const rows = tokens.map((t) => tokenRow(t, state, crewWide, reload, redraw));
  return h("table", { class: "list", id: "tokens-table" }, h("thead", {}, head), h("tbody", {}, rows));
}

function tokenRow(t, state, crewWide, reload, redraw) {
  const pick = h("input", {
    type: "checkbox", id: `pick-${t.id}`, "aria-label": `Select token ${t.name}`,
    checked: state.selected.has(t.id), disabled: t.status !== "active",
  });
  pick.addEventListener("change", () => {
    if (pick.checked) state.selected.add(t.id);
    else state.selected.delete(t.id);
    redraw();
    document.getElementById(`pick-${t.id}`).focus();
  });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const actions = t.status === "active"
    ? [
      h("button", { type: "button", class: "secondary small", onclick: () => revoke(t, false, error, reload, state) }, "Revoke"),
      h("button", { type: "button", class: "danger small", onclick: () => revoke(t, true, error, reload, state) }, "Revoke and disconnect"),
    ]
    : [];
  return h("tr", { "data-token-id": t.id },
    h("td", { class: "pick" }, pick),
    h("td", { "data-label": "Name" }, h("strong", {}, t.name)),
    h("td", { "data-label": "Crew" }, t.crew.name),
    crewWide ? h("td", { "data-label": "Owner" }, t.user.username) : null,
    h("td", { "data-label": "Created" }, timeEl(t.created_at)),
    h("td", { "data-label": "Last used" }, timeEl(t.last_used_at), t.last_used_ip ? h("span", { class: "muted" }, ` from ${t.last_used_ip}`) : null),
    h("td", { "data-label": "Settings" }, settingsBadges(t)),
    h("td", { "data-label": "Status" }, statusBadge(t)),
    h("td", { "data-label": "Actions", class: "row-actions" }, actions, error));
}

function settingsBadges(t) {
  const tier = t.redaction === "inherit" ? `inherit (${t.effective_redaction})` : t.redaction;
  return h("span", { class: "badges" },
    badge(`Redaction: ${tier}`, t.effective_redaction === "strict" ? "strict" : null),
    t.region ? badge(`Region: ${t.region}`) : null,
    t.server ? badge(`Server: ${t.server}`) : null,
    t.expires_at && t.status === "active" ? badge(`Expires ${new Date(t.expires_at).toLocaleDateString()}`) : null);
}

function statusBadge(t) {
  return badge(t.status, t.status === "active" ? "ok" : "off");
}

async function revoke(t, disconnect, error, reload, state) {
  const text = disconnect
    ? `Revoke token "${t.name}" and close the live tunnels it opened? It stops working at once.`
    : `Revoke token "${t.name}"? It stops working at once; tunnels it opened stay up until closed.`;
  if (!(await confirmAction(text, disconnect ? "Revoke and disconnect" : "Revoke"))) return;
  error.hidden = true;
  try {
    const reply = await api("DELETE", `/tokens/${t.id}${disconnect ? "?disconnect=1" : ""}`);
    state.selected.delete(t.id);
    state.refocus = true;
    state.result = `Revoked "${t.name}".` + (disconnect ? ` Live tunnels closed: ${reply.tunnels_closed ?? 0}.` : "");
    reload();
  } catch (failure) {
    showError(error, failure.message);
  }
}

/** The bar of bulk actions, shown while any token is selected. */
function bulkBar(state, reload) {
  const count = state.selected.size;
  const result = h("p", { class: "muted", role: "status", id: "list-result" }, state.result || "");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  state.result = "";
  if (count === 0) return h("div", {}, result);
  const plural = `${count} token${count === 1 ? "" : "s"}`;
  const run = async (label, question, body) => {
    if (!(await confirmAction(question, label))) return;
    try {
      const reply = await api("POST", "/tokens/bulk", { ...body, ids: [...state.selected] });
      state.selected.clear();
      state.refocus = true;
      const failed = reply.failed.map((f) => `token ${f.id}: ${f.error.message}`);
      state.result = `${reply.updated.length} updated.` + (failed.length ? ` Not changed: ${failed.join("; ")}` : "");
      reload();
    } catch (failure) {
      showError(error, failure.message);
    }
  };
  return h("div", { class: "bulk", id: "bulk-bar", role: "region", "aria-label": "Bulk actions" },
    h("span", { id: "bulk-count" }, `${plural} selected`),
    h("button", {
      type: "button", class: "danger small", id: "bulk-delete",
      onclick: () => run(`Delete ${plural}`, `Delete ${plural}? They stop working at once; this cannot be undone.`, { action: "revoke" }),
    }, "Delete"),
    h("button", {
      type: "button", class: "secondary small", id: "bulk-standard",
      onclick: () => run("Set Standard", `Set redaction to Standard on ${plural}?`, { action: "set_redaction", redaction: "standard" }),
    }, "Set Standard"),
    h("button", {
      type: "button", class: "secondary small", id: "bulk-strict",
      onclick: () => run("Set Strict", `Set redaction to Strict on ${plural}?`, { action: "set_redaction", redaction: "strict" }),
    }, "Set Strict"),
    error, result);
}
