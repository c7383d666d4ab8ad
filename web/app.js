// The dashboard shell: session, sign-in and sign-out, crew picker and hash routes.
"use strict";

import { api, setCsrf, whenSignedOut, h } from "./dom.js";
import { tokensPage } from "./tokens.js";
import { tunnelsPage, trafficPage } from "./tunnels.js";
import { crewPage, auditPage } from "./crew.js";

/** What every page reads: the signed-in user, their crews, the chosen one. */
const session = { user: null, crews: [], crew: null };

const pages = { tokens: tokensPage, tunnels: tunnelsPage, traffic: trafficPage, crew: crewPage, audit: auditPage };

/** Timers of the page on screen (live polling), stopped when the page changes. */
let stopPage = () => {};

function byId(id) {
  return document.getElementById(id);
}

function showSignIn() {
  stopPage();
  session.user = null;
  byId("app").hidden = true;
  byId("signin").hidden = false;
  byId("signin-username").focus();
}

async function signIn(event) {
  event.preventDefault();
  const error = byId("signin-error");
  error.hidden = true;
  const username = byId("signin-username").value.trim();
  const password = byId("signin-password").value;
  if (!username || !password) {
    error.textContent = "Enter your username and password.";
    error.hidden = false;
    return;
  }
  try {
    const reply = await api("POST", "/session", { username, password });
    setCsrf(reply.csrf_token);
    byId("signin-password").value = "";
    await start();
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
    byId("signin-password").focus();
  }
}

/** Sign out this tab, or with `everywhere` every session of the account. */
async function signOut(everywhere = false) {
  try {
    await api("DELETE", everywhere === true ? "/sessions" : "/session");
  } catch (failure) {
    // The session may be gone already; signing in again is the way forward either way.
  }
  setCsrf("");
  // The next person to sign in on this tab starts from their own first crew.
  sessionStorage.removeItem("berth.crew");
  showSignIn();
}

function openPasswordDialog() {
  for (const id of ["password-current", "password-new"]) byId(id).value = "";
  byId("password-revoke").checked = false;
  byId("password-error").hidden = true;
  byId("password-done").hidden = true;
  byId("password-dialog").showModal();
  byId("password-current").focus();
}

/** Change the password; the server ends every session and hands this tab a new one. */
async function changePassword(event) {
  event.preventDefault();
  const error = byId("password-error");
  error.hidden = true;
  const body = {
    current_password: byId("password-current").value,
    new_password: byId("password-new").value,
    revoke_tokens: byId("password-revoke").checked,
  };
  try {
    const reply = await api("POST", "/me/password", body);
    setCsrf(reply.csrf_token);
    const revoked = body.revoke_tokens ? ` ${reply.tokens_revoked} token(s) revoked.` : "";
    byId("password-done").textContent = `Password changed; your other sessions are signed out.${revoked}`;
    byId("password-done").hidden = false;
    for (const id of ["password-current", "password-new"]) byId(id).value = "";
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  }
}

/** Load who is signed in and their crews; show sign-in if nobody is. */
async function start() {
  let me;
  let crews;
  try {
    me = await api("GET", "/me");
    setCsrf(me.csrf_token);
    ({ crews } = await api("GET", "/crews"));
  } catch (failure) {
    if (failure.status !== 401) {
      byId("signin-error").textContent = failure.code === "no_team_context"
        ? "You are not a member of any crew yet; ask an admin of your crew to add you."
        : failure.message;
      byId("signin-error").hidden = false;
    }
    showSignIn();
    return;
  }
  session.user = me.user;
  session.crews = crews;
  const saved = sessionStorage.getItem("berth.crew");
  session.crew = crews.find((c) => String(c.id) === saved) || crews.find((c) => c.id === me.crew.id) || crews[0];
  const picker = byId("crew-picker");
  picker.replaceChildren(...crews.map((c) => h("option", { value: c.id }, `${c.name} (${c.role})`)));
  picker.value = session.crew.id;
  byId("whoami").textContent = `Signed in as ${me.user.username}`;
  byId("signin").hidden = true;
  byId("app").hidden = false;
  render();
}

function pickCrew() {
  const id = byId("crew-picker").value;
  session.crew = session.crews.find((c) => String(c.id) === id);
  sessionStorage.setItem("berth.crew", id);
  render();
}

/** Show the page the hash names (#/tokens, #/traffic/ID, ...). */
function render() {
  if (!session.user) return;
  stopPage();
  stopPage = () => {};
  const [name, arg] = window.location.hash.replace(/^#\/?/, "").split("/");
  const page = pages[name] ? name : "tokens";
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.page === page || (page === "traffic" && link.dataset.page === "tunnels");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = byId("main");
  main.replaceChildren();
  const stop = pages[page](main, session, arg ? decodeURIComponent(arg) : null);
  if (typeof stop === "function") stopPage = stop;
}

/** After a route change, move focus to the page heading so keyboard users land there. */
function onRoute() {
  render();
  const heading = byId("main").querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  byId("signin-form").addEventListener("submit", signIn);
  byId("signout").addEventListener("click", () => signOut(false));
  byId("signout-all").addEventListener("click", () => signOut(true));
  byId("password-open").addEventListener("click", openPasswordDialog);
  byId("password-form").addEventListener("submit", changePassword);
  byId("password-cancel").addEventListener("click", () => byId("password-dialog").close());
  byId("crew-picker").addEventListener("change", pickCrew);
  window.addEventListener("hashchange", onRoute);
  whenSignedOut(showSignIn);
  start();
});
