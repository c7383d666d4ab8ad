// The Crew page (members, roles, default redaction, subdomains) and the Audit page.
"use strict";

import {
  api, h, timeEl, field, select, placeError, clearErrors, showError, confirmAction,
} from "./dom.js";

const ROLES = ["owner", "admin", "member", "viewer"];

/** Roles this caller may hand out: owners any, admins all but owner. */
function assignable(role) {
  if (role === "owner") return ROLES;
  if (role === "admin") return ROLES.filter((r) => r !== "owner");
  return [];
}

/** Render the Crew page. */
export function crewPage(main, session) {
  const crew = session.crew;
  const settings = h("section", { class: "panel", "aria-labelledby": "settings-title" });
  const members = h("section", { "aria-labelledby": "members-title" });
  const names = h("section", { "aria-labelledby": "subdomains-title", id: "subdomains" });
  main.append(h("h1", {}, `Crew ${crew.name}`),
    h("p", { class: "muted" }, `Your role: ${crew.role}.`), settings, members, names);
  renderSettings(settings, session);
  loadMembers(members, session);
  loadSubdomains(names, session);
}

/** The names the crew holds (reserved, in use, held after use); admins and owners reserve and release. */
async function loadSubdomains(section, session) {
  const title = h("h2", { id: "subdomains-title" }, "Subdomains");
  let subdomains;
  try {
    ({ subdomains } = await api("GET", `/subdomains?crew=${session.crew.id}`));
  } catch (failure) {
    section.replaceChildren(title, h("p", { class: "error", role: "alert" }, failure.message));
    return;
  }
  const manage = session.crew.role === "owner" || session.crew.role === "admin";
  const reload = () => loadSubdomains(section, session);
  const intro = h("p", { class: "muted" },
    "No other crew can open a tunnel on these names: reserved ones until released, used ones for a while after their last tunnel closed.");
  const list = subdomains.length === 0
    ? h("p", { class: "muted" }, "Your crew holds no subdomain.")
    : h("table", { class: "list", id: "subdomains-table" },
      h("thead", {}, h("tr", {}, ["Name", "URL", "Status", manage ? "Actions" : null]
        .filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, subdomains.map((n) => subdomainRow(n, session, manage, reload))));
  section.replaceChildren(title, intro, list, manage ? reserveForm(session, reload) : null);
}

function subdomainRow(n, session, manage, reload) {
  const status = [];
  if (n.reserved) status.push("reserved");
  if (n.live) status.push("in use");
  const held = n.held_until ? h("span", {}, status.length ? ", held until " : "held until ", timeEl(n.held_until)) : null;
  const error = h("p", { class: "error", role: "alert", hidden: true });
  let release = null;
  if (manage && n.reserved) {
    release = h("button", { type: "button", class: "danger small", "aria-label": `Release ${n.name}` }, "Release");
    release.addEventListener("click", async () => {
      if (!(await confirmAction(`Release ${n.name}? Once no tunnel of your crew holds it, another crew may take it.`, "Release"))) return;
      try {
        await api("DELETE", `/subdomains/${encodeURIComponent(n.name)}?crew=${session.crew.id}`);
        reload();
      } catch (failure) {
        showError(error, failure.message);
      }
    });
  }
  return h("tr", { "data-subdomain": n.name },
    h("td", { "data-label": "Name" }, h("code", {}, n.name)),
    h("td", { "data-label": "URL" }, n.url),
    h("td", { "data-label": "Status" }, status.join(", "), held),
    manage ? h("td", { "data-label": "Actions", class: "row-actions" }, release, error) : null);
}

function reserveForm(session, reload) {
  const fields = {
    name: field("Name", h("input", { id: "subdomain-name", autocomplete: "off", required: true, pattern: "[a-z0-9-]{1,63}" }),
      "1 to 63 of a-z, 0-9 and -."),
  };
  const formError = h("p", { class: "error", role: "alert", hidden: true });
  const form = h("form", { id: "reserve-subdomain", novalidate: true, class: "grid" },
    fields.name.wrap, formError,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Reserve")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const name = fields.name.input.value.trim();
    if (!name) {
      placeError({ field: "name", message: "Enter the subdomain to reserve." }, fields, formError);
      return;
    }
    try {
      await api("POST", "/subdomains", { name, crew: session.crew.id });
      reload();
    } catch (failure) {
      placeError(failure, fields, formError);
    }
  });
  return h("section", { class: "panel", "aria-labelledby": "reserve-subdomain-title" },
    h("h3", { id: "reserve-subdomain-title" }, "Reserve a subdomain"), form);
}

function renderSettings(settings, session) {
  const crew = session.crew;
  const owner = crew.role === "owner";
  const tier = field("Default redaction", select("crew-redaction",
    [["standard", "Standard"], ["strict", "Strict"]], crew.default_redaction),
  owner ? "Tokens set to Inherit use this tier." : "Only an owner can change this.");
  tier.input.disabled = !owner;
  const formError = h("p", { class: "error", role: "alert", hidden: true });
  const saved = h("span", { role: "status", class: "muted" });
  const form = h("form", { id: "crew-settings", novalidate: true }, tier.wrap, formError,
    owner ? h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"), saved) : null);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    saved.textContent = "";
    try {
      const reply = await api("PATCH", `/crews/${crew.id}`, { default_redaction: tier.input.value });
      crew.default_redaction = reply.default_redaction;
      saved.textContent = `Saved: ${reply.default_redaction}.`;
    } catch (failure) {
      placeError(failure, { default_redaction: tier }, formError);
    }
  });
  settings.replaceChildren(h("h2", { id: "settings-title" }, "Settings"), form);
}

async function loadMembers(section, session) {
  let members;
  try {
    ({ members } = await api("GET", `/crews/${session.crew.id}/members`));
  } catch (failure) {
    section.replaceChildren(h("h2", { id: "members-title" }, "Members"), h("p", { class: "error", role: "alert" }, failure.message));
    return;
  }
  const reload = () => loadMembers(section, session);
  const roles = assignable(session.crew.role);
  const head = h("tr", {}, ["User", "Role", "Joined", roles.length ? "Actions" : null]
    .filter(Boolean).map((c) => h("th", { scope: "col" }, c)));
  const rows = members.map((m) => memberRow(m, session, roles, reload));
  section.replaceChildren(h("h2", { id: "members-title" }, "Members"),
    h("table", { class: "list", id: "members-table" }, h("thead", {}, head), h("tbody", {}, rows)),
    roles.length ? addMemberForm(session, roles, reload) : null);
}

function memberRow(m, session, roles, reload) {
  const me = m.user.id === session.user.id;
  const manageable = roles.includes(m.role) && !me;
  const error = h("p", { class: "error", role: "alert", hidden: true });
  let roleCell = m.role;
  if (manageable) {
    const picker = select(`role-${m.user.id}`, roles.map((r) => [r, r]), m.role);
    picker.setAttribute("aria-label", `Role of ${m.user.username}`);
    picker.addEventListener("change", async () => {
      error.hidden = true;
      try {
        await api("PATCH", `/crews/${session.crew.id}/members/${m.user.id}`, { role: picker.value });
        reload();
      } catch (failure) {
        picker.value = m.role;
        showError(error, failure.message);
      }
    });
    roleCell = picker;
  }
  const remove = manageable
    ? h("button", { type: "button", class: "danger small", "aria-label": `Remove ${m.user.username}` }, "Remove")
    : null;
  if (remove) {
    remove.addEventListener("click", async () => {
      if (!(await confirmAction(`Remove ${m.user.username} from crew ${session.crew.name}? Their tokens for this crew stop working.`, "Remove"))) return;
      try {
        await api("DELETE", `/crews/${session.crew.id}/members/${m.user.id}`);
        reload();
      } catch (failure) {
        showError(error, failure.message);
      }
    });
  }
  return h("tr", { "data-user": m.user.username },
    h("td", { "data-label": "User" }, m.user.username, me ? h("span", { class: "muted" }, " (you)") : null),
    h("td", { "data-label": "Role" }, roleCell),
    h("td", { "data-label": "Joined" }, timeEl(m.joined_at)),
    roles.length ? h("td", { "data-label": "Actions", class: "row-actions" }, remove, error) : null);
}

function addMemberForm(session, roles, reload) {
  const fields = {
    username: field("Username", h("input", { id: "member-username", autocomplete: "off", required: true })),
    role: field("Role", select("member-role", roles.map((r) => [r, r]), "member")),
  };
  const formError = h("p", { class: "error", role: "alert", hidden: true });
  const form = h("form", { id: "add-member", novalidate: true, class: "grid" },
    fields.username.wrap, fields.role.wrap, formError,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Add member")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const username = fields.username.input.value.trim();
    if (!username) {
      placeError({ field: "username", message: "Enter the username of an existing user." }, fields, formError);
      return;
    }
    try {
      await api("POST", `/crews/${session.crew.id}/members`, { username, role: fields.role.input.value });
      reload();
    } catch (failure) {
      placeError(failure, fields, formError);
    }
  });
  return h("section", { class: "panel", "aria-labelledby": "add-member-title" },
    h("h3", { id: "add-member-title" }, "Add a member"), form);
}

/** Render the Audit page: the crew's recent events (admin and owner). */
export function auditPage(main, session) {
  const body = h("div", { id: "audit" });
  main.append(h("h1", {}, "Audit"),
    h("p", { class: "muted" }, `Recent events of crew ${session.crew.name}.`), body);
  api("GET", `/audit?crew=${session.crew.id}&limit=200`).then(({ events }) => {
    if (events.length === 0) {
      body.replaceChildren(h("p", { class: "muted" }, "No events yet."));
      return;
    }
    const head = h("tr", {}, ["When", "Who", "Action", "Detail", "From"].map((c) => h("th", { scope: "col" }, c)));
    const rows = events.map((e) => h("tr", {},
      h("td", { "data-label": "When" }, timeEl(e.at)),
      h("td", { "data-label": "Who" }, e.username || "—", e.token_id ? h("span", { class: "muted" }, ` (token ${e.token_id})`) : null),
      h("td", { "data-label": "Action" }, h("code", {}, e.action)),
      h("td", { "data-label": "Detail" }, e.detail || ""),
      h("td", { "data-label": "From" }, e.address || "")));
    body.replaceChildren(h("table", { class: "list", id: "audit-table" }, h("thead", {}, head), h("tbody", {}, rows)));
  }, (failure) => {
    body.replaceChildren(h("p", { class: "error", role: "alert" }, failure.message));
  });
}
