// First-run setup: posts the form to /api/v1/setup and shows how to log in.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("setup");
  const error = document.getElementById("error");
  const code = new URLSearchParams(window.location.search).get("code") || "";
  document.getElementById("code").value = code;
  if (!code) {
    showError("This page needs the setup code: open the URL the server printed, or run berth admin create-user.");
  }

  function showError(message) {
    error.textContent = message;
    error.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = {
      code: document.getElementById("code").value,
      username: document.getElementById("username").value.trim(),
      crew: document.getElementById("crew").value.trim(),
      password: document.getElementById("password").value,
    };
    try {
      const response = await fetch("/api/v1/setup", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
      const reply = await response.json();
      if (!response.ok) {
        showError(reply.error ? reply.error.message : "Setup failed; try again.");
        return;
      }
      form.hidden = true;
      document.getElementById("done-crew").textContent = reply.crew.name;
      document.getElementById("done-command").textContent =
        "berth login --server " + window.location.origin + " --username " + reply.user.username;
      document.getElementById("done").hidden = false;
    } catch (err) {
      showError("Could not reach the server; check it is running and try again.");
    }
  });
});
