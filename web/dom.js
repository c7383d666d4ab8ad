// Small DOM, time and API helpers shared by the dashboard's pages.
"use strict";

/** Build an element: h("a", {href: "#"}, "text", child...). Text is never parsed as HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An API failure: HTTP status, error code, the server's sentence, and the field it names. */
export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
    const named = /(?:Field|Query) `([a-z_]+)`/.exec(message);
    this.field = named ? named[1] : null;
  }
}

let csrfToken = "";

/** Remember the session's CSRF token; every mutation sends it. */
export function setCsrf(token) {
  csrfToken = token || "";
}

/** Called when the session is gone (401), so the app can show sign-in. */
let onSignedOut = () => {};
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

/**
 * Call the JSON API with the session cookie; throws ApiFailure on an error reply.
 * `background`: an automatic refresh, which does not keep the session from its idle end.
 */
export async function api(method, path, body, { background = false } = {}) {
  const headers = {};
  if (background) headers["X-Berth-Background"] = "1";
  // The server takes sign-in and every change only as JSON (a cross-site form cannot send it).
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = csrfToken;
  }
  let response;
  try {
    response = await fetch("/api/v1" + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiFailure(0, "unreachable", "Could not reach the server; check it is running and try again.");
  }
  if (response.status === 204) return null;
  let reply = null;
  try {
    reply = await response.json();
  } catch (err) {
    reply = null;
  }
  if (!response.ok) {
    const error = reply && reply.error ? reply.error : {};
    const failure = new ApiFailure(response.status, error.code || "error",
      error.message || `The server answered ${response.status}; try again.`);
    // A wrong password (sign-in, password change) is no sign of a lost session.
    if (response.status === 401 && path !== "/session" && path !== "/me/password") onSignedOut();
    throw failure;
  }
  return reply;
}

/** "3 minutes ago" for an RFC 3339 time; "never" for null. */
export function relative(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  const future = seconds < 0;
  const abs = Math.abs(seconds);
  const steps = [[60, "second", 1], [3600, "minute", 60], [86400, "hour", 3600],
    [86400 * 30, "day", 86400], [86400 * 365, "month", 86400 * 30], [Infinity, "year", 86400 * 365]];
  if (abs < 10) return future ? "in a few seconds" : "just now";
  for (const [limit, unit, size] of steps) {
    if (abs < limit) {
      const n = Math.floor(abs / size);
      const text = `${n} ${unit}${n === 1 ? "" : "s"}`;
      return future ? `in ${text}` : `${text} ago`;
    }
  }
  return iso;
}

/** A <time> showing relative time, the exact time on hover. */
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  const exact = new Date(iso);
  return h("time", { datetime: iso, title: `${exact.toLocaleString()} (${iso})` }, relative(iso));
}

/** Show an error next to a control (or a form-level slot); aria-describedby links them. */
export function showError(slot, message) {
  slot.textContent = message;
  slot.hidden = false;
}

/** Clear every error slot and invalid mark inside a container. */
export function clearErrors(container) {
  for (const slot of container.querySelectorAll(".error")) {
    slot.textContent = "";
    slot.hidden = true;
  }
  for (const input of container.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/**
 * A labelled control with its own error slot: {wrap, input, error}. `control` is the
 * input/select element; its id ties the label and the error together.
 */
export function field(labelText, control, hint) {
  const id = control.id;
  const error = h("p", { class: "error", id: `${id}-error`, role: "alert", hidden: true });
  control.setAttribute("aria-describedby", `${id}-error${hint ? ` ${id}-hint` : ""}`);
  const wrap = h("div", { class: "field" },
    h("label", { for: id }, labelText), control,
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null, error);
  return { wrap, input: control, error };
}

/**
 * Put an ApiFailure next to the control it names (fields maps API field names to
 * {input, error}); otherwise into `fallback`.
 */
export function placeError(failure, fields, fallback) {
  const target = failure.field && fields[failure.field];
  if (target) {
    target.input.setAttribute("aria-invalid", "true");
    showError(target.error, failure.message);
    target.input.focus();
  } else {
    showError(fallback, failure.message);
  }
}

/** A select with options [[value, label]...]. */
export function select(id, options, selected) {
  return h("select", { id, name: id },
    options.map(([value, label]) => h("option", { value, selected: String(value) === String(selected) }, label)));
}

/** Ask a yes/no question in the modal dialog; resolves true on Confirm. */
export function confirmAction(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    dialog.querySelector("button[value=cancel]").focus();
  });
}

/** A badge: a small labelled pill. */
export function badge(text, kind) {
  return h("span", { class: `badge${kind ? ` badge-${kind}` : ""}` }, text);
}

/**
 * Replace a container's children, keeping keyboard focus on the control with the same
 * `data-focus-key` if it was inside: live pages redraw while someone tabs through them.
 */
export function redraw(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : undefined;
  container.replaceChildren(...children);
  if (key) {
    const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}
