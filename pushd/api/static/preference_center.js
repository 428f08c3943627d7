// The preference center page (pushd/api/preference_center.py). The signed token comes
// in the link's fragment (#token=...), which browsers never send to a server; it is
// taken out of the address bar at once and sent only in the body of the API calls.
"use strict";

(function () {
  const CHANNEL_ORDER = ["push", "email", "sms"];
  const API = "api/preference-center";
  const status = document.getElementById("status");
  const form = document.getElementById("preferences");
  const rows = document.getElementById("categories");
  const muted = document.getElementById("muted");
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  let shown = null; // the view last loaded or saved: only changes are sent

  function say(text) {
    status.textContent = text;
  }

  async function call(method, body) {
    const response = await fetch(API, {
      method: method,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    const answer = await response.json().catch(function () { return null; });
    if (!response.ok) {
      const message = answer && answer.error ? answer.error.message : "HTTP " + response.status;
      throw new Error(message);
    }
    return answer;
  }

  function cell(child) {
    const td = document.createElement("td");
    td.appendChild(child);
    return td;
  }

  function render(view) {
    shown = view;
    muted.checked = view.muted;
    rows.replaceChildren();
    for (const category of view.categories) {
      const row = document.createElement("tr");
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = category.name;
      if (!category.opt_out) {
        name.append(" (always sent)");
      }
      row.appendChild(name);
      // In-app is the notification's record: always on, never a switch.
      const inapp = document.createElement("input");
      inapp.type = "checkbox";
      inapp.checked = true;
      inapp.disabled = true;
      inapp.setAttribute("aria-label", category.name + ": in the application (always on)");
      row.appendChild(cell(inapp));
      for (const channel of CHANNEL_ORDER) {
        const box = document.createElement("input");
        box.type = "checkbox";
        box.name = category.slug + "." + channel;
        box.dataset.category = category.slug;
        box.dataset.channel = channel;
        box.checked = category.channels[channel] !== false;
        box.disabled = !category.opt_out;
        box.setAttribute("aria-label", category.name + ": " + channel);
        row.appendChild(cell(box));
      }
      rows.appendChild(row);
    }
    form.hidden = false;
  }

  function changes() {
    const categories = {};
    const before = {};
    for (const category of shown.categories) {
      before[category.slug] = category.channels;
    }
    for (const box of rows.querySelectorAll("input[data-category]")) {
      const slug = box.dataset.category;
      const channel = box.dataset.channel;
      if (!box.disabled && box.checked !== (before[slug][channel] !== false)) {
        (categories[slug] = categories[slug] || {})[channel] = box.checked;
      }
    }
    const body = { token: token, categories: categories };
    if (muted.checked !== shown.muted) {
      body.muted = muted.checked;
    }
    return body;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    say("Saving…");
    try {
      render(await call("PUT", changes()));
      say("Saved.");
    } catch (error) {
      say("Not saved: " + error.message);
    }
  });

  if (!token) {
    say("This link is incomplete: open the whole link from your email.");
    return;
  }
  call("POST", { token: token }).then(
    function (view) {
      render(view);
      say(view.categories.length ? "" : "There is nothing to choose yet.");
    },
    function (error) { say("This link does not work: " + error.message); },
  );
})();
