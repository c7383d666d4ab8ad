// The Tunnels page (live tunnels of the crew, close) and the Traffic page (recorded requests).
"use strict";

import { api, h, timeEl, showError, confirmAction, badge, redraw } from "./dom.js";

/** How often the live pages ask the server again. */
const TUNNELS_POLL_MS = 5000;
const TRAFFIC_POLL_MS = 2000;
/** Requests the Traffic page lists. */
const TRAFFIC_LIMIT = 100;

/**
 * Poll `tick` until the returned stop function runs; one call at a time. `tick`
 * gets the api options: the first call is the person's, the rest background.
 */
function poll(tick, every) {
  let stopped = false;
  let timer = null;
  const loop = async (options) => {
    await tick(options);
    if (!stopped) timer = setTimeout(() => loop({ background: true }), every);
  };
  loop({ background: false });
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** Render the Tunnels page; returns the function that stops its polling. */
export function tunnelsPage(main, session) {
  const body = h("div", { id: "tunnels" });
  const status = h("p", { class: "error", role: "alert", hidden: true });
  main.append(h("h1", {}, "Tunnels"),
    h("p", { class: "muted" }, `Live tunnels of crew ${session.crew.name}, refreshed every few seconds.`),
    status, body);
  let last = "";
  return poll(async (options) => {
    try {
      const { tunnels } = await api("GET", `/tunnels?active=1&crew=${session.crew.id}`, undefined, options);
      status.hidden = true;
      // Redraw only on a change, so a pending error or a hover is not wiped every poll.
      const now = JSON.stringify(tunnels);
      if (now === last) return;
      last = now;
      renderTunnels(body, tunnels, session);
    } catch (failure) {
      showError(status, failure.message);
    }
  }, TUNNELS_POLL_MS);
}

function renderTunnels(body, tunnels, session) {
  if (tunnels.length === 0) {
    redraw(body, h("p", { class: "muted", id: "no-tunnels" },
      "No live tunnels. Open one with: berth share PORT"));
    return;
  }
  const counted = tunnels.some((t) => typeof t.request_count === "number");
  const head = h("tr", {}, ["URL", "Owner", "Token", "Started", counted ? "Requests" : null, "Actions"]
    .filter(Boolean).map((c) => h("th", { scope: "col" }, c)));
  const rows = tunnels.map((t) => {
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const close = h("button", { type: "button", class: "danger small", "data-focus-key": `close-${t.id}` }, "Close");
    close.setAttribute("aria-label", `Close tunnel ${t.url}`);
    close.addEventListener("click", () => closeTunnel(t, error, body, session));
    return h("tr", { "data-tunnel-id": t.id },
      h("td", { "data-label": "URL" }, h("a", { href: t.url, rel: "noopener noreferrer", target: "_blank" }, t.url),
        t.kind !== "http" ? badge(t.kind) : null),
      h("td", { "data-label": "Owner" }, t.user.username),
      h("td", { "data-label": "Token" }, t.token.name),
      h("td", { "data-label": "Started" }, timeEl(t.opened_at)),
      counted ? h("td", { "data-label": "Requests", class: "num" }, String(t.request_count ?? 0)) : null,
      h("td", { "data-label": "Actions", class: "row-actions" },
        t.kind === "http" ? h("a", { href: `#/traffic/${encodeURIComponent(t.id)}`, class: "button secondary small", "data-focus-key": `traffic-${t.id}` }, "Traffic") : null,
        close, error));
  });
  redraw(body, h("table", { class: "list", id: "tunnels-table" }, h("thead", {}, head), h("tbody", {}, rows)));
}

async function closeTunnel(t, error, body, session) {
  if (!(await confirmAction(`Close tunnel ${t.url}? Its client is disconnected and does not reconnect.`, "Close tunnel"))) return;
  try {
    await api("DELETE", `/tunnels/${encodeURIComponent(t.id)}`);
    const { tunnels } = await api("GET", `/tunnels?active=1&crew=${session.crew.id}`);
    renderTunnels(body, tunnels, session);
  } catch (failure) {
    showError(error, failure.message);
  }
}

/** Render the Traffic page of one tunnel; returns the function that stops its polling. */
export function trafficPage(main, session, tunnelId) {
  const status = h("p", { class: "error", role: "alert", hidden: true });
  const listEl = h("div", { id: "traffic" });
  const detail = h("section", { id: "request-detail", "aria-live": "polite", hidden: true });
  const state = { selected: null, requests: [] };
  const which = h("span", { class: "mono", id: "traffic-tunnel" }, tunnelId || "");
  main.append(h("h1", {}, "Traffic"),
    h("p", {}, h("a", { href: "#/tunnels" }, "← All tunnels"), " · ", which),
    status, h("div", { class: "split" }, listEl, detail));
  if (!tunnelId) {
    showError(status, "Pick a tunnel on the Tunnels page to see its traffic.");
    return () => {};
  }
  // Name the tunnel by its URL; the id alone means little to a reader.
  api("GET", `/tunnels?crew=${session.crew.id}`).then(({ tunnels }) => {
    const tunnel = tunnels.find((t) => t.id === tunnelId);
    if (tunnel) which.textContent = `${tunnel.url}${tunnel.active ? "" : " (closed)"}`;
  }, () => {});
  return poll(async (options) => {
    try {
      const { requests } = await api("GET", `/tunnels/${encodeURIComponent(tunnelId)}/requests?limit=${TRAFFIC_LIMIT}`,
        undefined, options);
      status.hidden = true;
      state.requests = requests;
      renderRequests(listEl, detail, state);
    } catch (failure) {
      const missing = failure.status === 404 && /^Nothing at/.test(failure.message);
      showError(status, missing
        ? "This server does not record traffic yet; upgrade berth to use the inspector."
        : failure.message);
    }
  }, TRAFFIC_POLL_MS);
}

function renderRequests(listEl, detail, state) {
  if (state.requests.length === 0) {
    redraw(listEl, h("p", { class: "muted", id: "no-requests" }, "No requests yet; they appear here as they arrive."));
    return;
  }
  const head = h("tr", {}, ["Time", "Method", "Path", "Status", "Duration"].map((c) => h("th", { scope: "col" }, c)));
  const rows = state.requests.map((r) => {
    const open = h("button", {
      type: "button", class: "link", "aria-label": `Details of ${r.method} ${r.path}`, "data-focus-key": `request-${r.id}`,
    }, r.path);
    open.addEventListener("click", () => {
      state.selected = r.id;
      renderRequests(listEl, detail, state);
      detail.querySelector("h2").focus();
    });
    return h("tr", { "data-request-id": r.id, class: r.id === state.selected ? "selected" : null },
      h("td", { "data-label": "Time" }, timeEl(r.at)),
      h("td", { "data-label": "Method" }, r.method),
      h("td", { "data-label": "Path", class: "path" }, open),
      h("td", { "data-label": "Status" }, badge(String(r.status), r.status >= 500 ? "off" : r.status >= 400 ? "strict" : "ok")),
      h("td", { "data-label": "Duration", class: "num" }, `${r.duration_ms} ms`));
  });
  redraw(listEl, h("table", { class: "list", id: "requests-table" }, h("thead", {}, head), h("tbody", {}, rows)));
  const chosen = state.requests.find((r) => r.id === state.selected);
  if (chosen) renderDetail(detail, chosen);
}

function headerTable(caption, headers) {
  return h("table", { class: "headers" }, h("caption", {}, caption),
    h("tbody", {}, (headers || []).map(([name, value]) =>
      h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: value === "[REDACTED]" ? "redacted" : null }, value)))));
}

function renderDetail(detail, r) {
  detail.hidden = false;
  detail.replaceChildren(
    h("h2", { tabindex: "-1" }, `${r.method} ${r.path}`),
    h("p", {}, badge(String(r.status)), ` ${r.duration_ms} ms · ${r.bytes_in} bytes in · ${r.bytes_out} bytes out · `, timeEl(r.at)),
    headerTable("Request headers", r.request_headers),
    headerTable("Response headers", r.response_headers));
}
