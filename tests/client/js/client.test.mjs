// The JavaScript client against a real pushd (tests/client/test_js_client.py starts it
// and runs this file with `node --test`): resume after a disconnection, the close-code
// policy, batched acks, reads, and the SSE fallback.
//
// Environment: PUSHD_URL (the server), PUSHD_ADMIN_KEY, PUSHD_CONTROL_URL (POST
// /close?code=N closes every socket of the server with N, as pushd does itself).

import assert from "node:assert/strict";
import { test } from "node:test";

import { PushdClient, adviceFor } from "../../../pushd/client/pushd-client.js";
import { FetchEventSource } from "./event_source.mjs";

const URL_ = process.env.PUSHD_URL;
const ADMIN = { Authorization: `Bearer ${process.env.PUSHD_ADMIN_KEY}` };
const CONTROL = process.env.PUSHD_CONTROL_URL;
const QUICK = { base: 50, cap: 200 };
const WAIT_MS = 5000;

async function api(method, path, body) {
  const headers = { ...ADMIN, ...(body === undefined ? {} : { "Content-Type": "application/json" }) };
  const response = await fetch(URL_ + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.status < 300, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const createUser = () => api("POST", "/api/users", {});
const userToken = async (userId) => (await api("POST", `/api/users/${userId}/tokens`)).token;
const send = (userId, body) => api("POST", "/api/notifications", { user_id: userId, title: "hi", body });

async function closeEverySocket(code) {
  const response = await fetch(`${CONTROL}/close?code=${code}`, { method: "POST" });
  assert.equal(response.status, 204);
}

/** Records a client's events; `until` waits for a condition on them. */
function record(client) {
  const seen = { notifications: [], states: [], reads: [], waiters: new Set() };
  const changed = () => seen.waiters.forEach((check) => check());
  client.on("notification", (n) => (seen.notifications.push(n), changed()));
  client.on("state", (s) => (seen.states.push(s), changed()));
  client.on("read", (r) => (seen.reads.push(r), changed()));
  seen.until = (what, condition) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        seen.waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}: ${JSON.stringify(seen.states)}`));
      }, WAIT_MS);
      const check = () => {
        if (!condition()) return;
        clearTimeout(timer);
        seen.waiters.delete(check);
        resolve();
      };
      seen.waiters.add(check);
      check();
    });
  seen.seqs = () => seen.notifications.map((n) => n.seq);
  seen.last = () => seen.states.at(-1)?.state;
  return seen;
}

/** A client closed when the test ends, passed or failed (else its reconnection loop
 * would keep Node running). */
function clientFor(t, options) {
  const client = new PushdClient({ url: URL_, ...options });
  t.after(() => client.close());
  return client;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A WebSocket that fails to open while `network.down`, as when the network is gone. */
const network = { down: false, attempts: 0 };
class FlakyWebSocket extends WebSocket {
  constructor(url) {
    network.attempts += 1;
    super(network.down ? "ws://127.0.0.1:9/ws" : url);
  }
}

test("notifications sent while disconnected arrive once, in order, after the reconnect", async (t) => {
  const user = await createUser();
  const token = await userToken(user.id);
  const client = clientFor(t, { token: async () => token, WebSocket: FlakyWebSocket, backoff: QUICK, sse: false });
  const seen = record(client);
  await client.connect();
  for (const n of ["0", "1", "2"]) await send(user.id, n);
  await seen.until("the first three", () => seen.seqs().length === 3);

  network.down = true;
  const before = network.attempts;
  await closeEverySocket(4000);
  await seen.until("closed", () => seen.last() === "closed");
  for (const n of ["3", "4"]) await send(user.id, n);
  await seen.until("a failed attempt", () => network.attempts >= before + 2);
  network.down = false;
  await seen.until("reconnected", () => seen.last() === "open");
  await send(user.id, "live");
  await seen.until("all six", () => seen.seqs().length >= 6);
  await pause(200); // a duplicate would have come by now
  assert.deepEqual(seen.seqs(), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(seen.notifications.map((n) => n.body), ["0", "1", "2", "3", "4", "live"]);
  assert.equal(client.lastSeq, 6);
  await client.close();
  assert.equal(client.state, "stopped");
});

test("a revoked token stops reconnection after asking the getter once more", async (t) => {
  const user = await createUser();
  const token = await userToken(user.id);
  let calls = 0;
  const client = clientFor(t, { token: async () => (calls++, token), backoff: QUICK });
  const seen = record(client);
  await client.connect();
  await api("POST", `/api/users/${user.id}/tokens/revoke`);
  await seen.until("stopped", () => seen.last() === "stopped");
  assert.equal(calls, 2);
  assert.match(seen.states.at(-1).reason, /refused/);
  assert.equal(seen.states.find((s) => s.state === "closed").code, 4505);
  await pause(300);
  assert.equal(seen.last(), "stopped");
  assert.equal(client.state, "stopped");
});

test("a new token that is refused too stops the client", async (t) => {
  const user = await createUser();
  const tokens = [await userToken(user.id), "not.a.token"];
  let calls = 0;
  const client = clientFor(t, { token: async () => tokens[Math.min(calls++, 1)], backoff: QUICK });
  const seen = record(client);
  await client.connect();
  await api("POST", `/api/users/${user.id}/tokens/revoke`);
  await seen.until("stopped", () => seen.last() === "stopped");
  assert.match(seen.states.at(-1).reason, /4501/);
  assert.equal(calls, 2);
});

test("an unknown user is not retried: connect() rejects", async (t) => {
  const user = await createUser();
  const token = await userToken(user.id);
  await api("DELETE", `/api/users/${user.id}`);
  const client = clientFor(t, { token, backoff: QUICK });
  await assert.rejects(client.connect(), /4503/);
  assert.equal(client.state, "stopped");
});

async function storedAckSeq(token) {
  const socket = new WebSocket(URL_.replace(/^http/, "ws") + "/ws");
  await new Promise((resolve, reject) => ((socket.onopen = resolve), (socket.onerror = reject)));
  socket.send(JSON.stringify({ type: "auth", token }));
  const welcome = await new Promise((resolve) => (socket.onmessage = (m) => resolve(JSON.parse(m.data))));
  socket.close();
  return welcome.ack_seq;
}

test("batched acks move the stored cursor", async (t) => {
  const user = await createUser();
  const token = await userToken(user.id);
  const client = clientFor(t, { token, ackDelay: 50, ackEvery: 100 });
  const seen = record(client);
  await client.connect();
  for (let n = 0; n < 5; n++) await send(user.id, String(n));
  await seen.until("five", () => seen.seqs().length === 5);
  const deadline = Date.now() + WAIT_MS;
  let acked;
  while ((acked = await storedAckSeq(token)) !== 5 && Date.now() < deadline) await pause(50);
  assert.equal(acked, 5);
  await client.close();
});

test("markRead by seq marks it read and every socket hears of it", async (t) => {
  const user = await createUser();
  const token = await userToken(user.id);
  const client = clientFor(t, { token });
  const seen = record(client);
  await client.connect();
  const accepted = await send(user.id, "read me");
  await seen.until("one", () => seen.seqs().length === 1);
  client.markRead(1);
  await seen.until("the read frame", () => seen.reads.length === 1);
  assert.deepEqual(seen.reads[0].ids, [accepted.id]);
  const stored = await api("GET", `/api/notifications/${accepted.id}`);
  assert.notEqual(stored.read_at, null);
  await client.close();
});

test("a persisted lastSeq resumes after it", async (t) => {
  const user = await createUser();
  for (const n of ["0", "1", "2"]) await send(user.id, n);
  const client = clientFor(t, { token: await userToken(user.id) });
  client.lastSeq = 2;
  const seen = record(client);
  await client.connect();
  await seen.until("the third", () => seen.seqs().length === 1);
  await pause(200);
  assert.deepEqual(seen.seqs(), [3]);
  await client.close();
});

test("falls back to SSE when the WebSocket cannot be opened, and resumes there", async (t) => {
  const user = await createUser();
  const token = await userToken(user.id);
  class RefusedWebSocket extends WebSocket {
    constructor() {
      super("ws://127.0.0.1:9/ws"); // nothing listens: as a proxy refusing the upgrade
    }
  }
  const client = clientFor(t, { token, WebSocket: RefusedWebSocket, EventSource: FetchEventSource, backoff: QUICK });
  const seen = record(client);
  await client.connect();
  assert.equal(client.transport, "sse");
  await send(user.id, "0");
  await seen.until("one", () => seen.seqs().length === 1);
  await closeEverySocket(4000); // the stream ends with an error event, reconnect: true
  await seen.until("closed", () => seen.states.some((s) => s.state === "closed" && s.code === 4000));
  await send(user.id, "1");
  await seen.until("two", () => seen.seqs().length >= 2);
  await pause(200);
  assert.deepEqual(seen.seqs(), [1, 2]);
  assert.throws(() => client.markRead(1), /SSE/);
  await client.close();
});

test("adviceFor follows the close-code ranges of docs/protocol.md", () => {
  const expected = {
    reconnect: [null, 1000, 1001, 1006, 1011, 4000, 4001, 4008, 4009, 4504, 4499],
    new_token: [4002, 4501, 4502, 4505],
    stop: [1002, 1007, 1009, 4500, 4503, 4999],
  };
  for (const [advice, codes] of Object.entries(expected)) {
    for (const code of codes) assert.equal(adviceFor(code), advice, `close code ${code}`);
  }
});
