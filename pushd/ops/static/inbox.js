// The demo inbox (pushd/ops/console.py): one user's notifications, live, through the
// JavaScript client served at /client.js. The API key typed in only issues the user a
// token (POST /api/users/{id}/tokens) and marks all read; everything else goes
// through the user's own connection, as in an application.
import { PushdClient } from "/client.js";

const notifications = new Map();  // id -> notification frame (with `read`)
let client = null;

function $(id) { return document.getElementById(id); }

// A POST with the API key and no body (the token's and the read-all's defaults).
async function call(path, key) {
  const response = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + key } });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error ? answer.error.message : response.statusText);
  return answer;
}

function render() {
  const items = [...notifications.values()].sort((a, b) => b.seq - a.seq);
  $("notifications").replaceChildren(...items.map(item => {
    const row = document.createElement("li");
    row.className = item.read ? "read" : "unread";
    row.dataset.id = item.id;
    const text = document.createElement("div");
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = item.title || "(no title)";
    const detail = document.createElement("div");
    detail.className = "muted";
    detail.textContent = [item.body, `#${item.seq}`, item.created_at].filter(Boolean).join(" · ");
    text.append(title, detail);
    row.append(text);
    if (!item.read) {
      const button = document.createElement("button");
      button.className = "mark-read";
      button.textContent = "Mark read";
      button.addEventListener("click", () => markRead(item.id));
      row.append(button);
    }
    return row;
  }));
  const unread = items.filter(item => !item.read).length;
  $("unread").textContent = String(unread);
  $("empty").hidden = items.length > 0;
  $("read-all").hidden = unread === 0;
}

function markRead(id) {
  // Shown at once; the server's `read` frame confirms it (to every socket of the user).
  notifications.get(id).read = true;
  client.markRead(id);
  render();
}

// A `read` frame: these ids, or (a read-all) everything up to `through_seq`.
function applyRead(frame) {
  for (const item of notifications.values()) {
    const covered = (frame.ids || []).includes(item.id) ||
      (frame.through_seq != null && item.seq <= frame.through_seq &&
       (frame.category === undefined || frame.category === item.category));
    if (covered) item.read = true;
  }
  render();
}

async function open(event) {
  event.preventDefault();
  const key = $("key").value.trim(), userId = $("user").value.trim();
  $("error").textContent = "";
  if (client) client.close();
  notifications.clear();
  render();
  const tokenPath = `/api/users/${encodeURIComponent(userId)}/tokens`;
  try {
    client = new PushdClient({
      url: location.origin,
      // Called again whenever the client (re)connects: a fresh token each time.
      token: async () => (await call(tokenPath, key)).token,
    });
    client.on("notification", frame => {
      const held = notifications.get(frame.id);
      if (held && (held.version ?? 1) > (frame.version ?? 1)) return;  // an edit came first
      notifications.set(frame.id, { ...frame, read: Boolean(frame.read) });
      render();
    });
    client.on("read", applyRead);
    // An edit replaces the content, a retraction removes it; an older version is stale.
    client.on("updated", frame => {
      const held = notifications.get(frame.id);
      if (!held || (held.version ?? 1) >= frame.version) return;
      Object.assign(held, { title: frame.title, body: frame.body, data: frame.data, version: frame.version });
      render();
    });
    client.on("retracted", frame => {
      const held = notifications.get(frame.id);
      if (held && (held.version ?? 1) < frame.version) { notifications.delete(frame.id); render(); }
    });
    client.on("state", state => { $("state").textContent = typeof state === "string" ? state : state.state; });
    $("read-all").onclick = async () => {
      try {
        await call(`/api/users/${encodeURIComponent(userId)}/notifications/read-all`, key);
      } catch (error) {
        $("error").textContent = "Cannot mark all read: " + error.message;
      }
    };
    await client.connect();
  } catch (error) {
    $("error").textContent = "Cannot open the inbox: " + error.message;
  }
}

$("open").addEventListener("submit", open);
render();
// The page is ready for input (tests wait for it: a click before this would submit the form).
document.documentElement.dataset.ready = "true";
