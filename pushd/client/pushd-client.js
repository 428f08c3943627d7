// pushd's JavaScript client: one user's notifications over pushd's WebSocket, kept open.
//
// An ES module with no dependency, for browsers and Node >= 18 (served by pushd at
// GET /client.js; docs/clients.md). It connects with a token from the application's
// token getter, reconnects with backoff (exponential, full jitter) as the close code
// advises (docs/protocol.md §4), resumes with `since` = the last seq it handed over,
// hands every notification to the application exactly once and in order, and
// acknowledges in batches. In a browser whose WebSocket cannot be opened (a proxy that
// refuses upgrades) it reads the same stream from GET /sse through EventSource.
//
//   import { PushdClient } from "/client.js";
//   const client = new PushdClient({ url: "https://pushd.example", token: fetchToken });
//   client.on("notification", (n) => show(n));
//   await client.connect();

export const PROTOCOL = "1.3";

/** The close codes of docs/protocol.md §4 (pushd's actors/transport.py `CloseCode`;
 * tests/client/test_js_client.py checks that the two agree). */
export const CLOSE_CODES = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  RECONNECT: 4000,
  AUTH_TIMEOUT: 4001,
  SESSION_EXPIRED: 4002,
  SLOW_CONSUMER: 4008,
  TOO_MANY_CONNECTIONS: 4009,
  PROTOCOL_ERROR: 4500,
  INVALID_TOKEN: 4501,
  TOKEN_EXPIRED: 4502,
  USER_UNKNOWN: 4503,
  TOKEN_REVOKED: 4505,
});

// Codes that refuse the token, not the client: another token may be welcome (once).
const TOKEN_REFUSALS = new Set([
  CLOSE_CODES.SESSION_EXPIRED,
  CLOSE_CODES.INVALID_TOKEN,
  CLOSE_CODES.TOKEN_EXPIRED,
  CLOSE_CODES.TOKEN_REVOKED,
]);
// Servers before protocol 1.2 closed with 4504 for the per-user socket cap: it means 4009.
const LEGACY_TOO_MANY_CONNECTIONS = 4504;
// WebSocket-layer codes for frames the client should not have sent: retrying repeats them.
const FIX_THE_CLIENT = new Set([1002, 1003, 1007, 1009]);

/** What to do after a close with `code` (null: the connection broke or never opened):
 * "reconnect" (with backoff, same token), "new_token" (ask the token getter again, once)
 * or "stop" (4500-4999: do not reconnect with the same credentials). */
export function adviceFor(code) {
  if (code === null || code === undefined || code === LEGACY_TOO_MANY_CONNECTIONS) {
    return "reconnect";
  }
  if (TOKEN_REFUSALS.has(code)) return "new_token";
  if (FIX_THE_CLIENT.has(code) || code >= CLOSE_CODES.PROTOCOL_ERROR) return "stop";
  return "reconnect";
}

const EVENTS = ["notification", "gap", "read", "updated", "retracted", "state"];
const READ_IDS_PER_FRAME = 100; // the server takes at most 100 ids in one read frame
const REMEMBERED_IDS = 1000; // how many seq -> id pairs markRead can translate

export class PushdClient {
  #url;
  #tokenGetter;
  #WebSocket;
  #EventSource;
  #sseAllowed;
  #backoff;
  #ackDelay;
  #ackEvery;
  #openTimeout;
  #listeners = new Map(EVENTS.map((name) => [name, new Set()]));
  #state = "closed";
  #token = null;
  #refusedToken = null; // the token the server refused last: the getter returning it ends it
  #socket = null; // the open, welcomed WebSocket
  #source = null; // the EventSource, once fallen back to SSE
  #transport = "websocket";
  #running = null; // the connection loop's promise
  #stopped = false;
  #wakeUp = null; // ends the backoff sleep early (close)
  #endSession = null; // ends the current socket or stream (close)
  #opened = null; // {promise, resolve, reject} of connect()
  #idsBySeq = new Map();
  #ackedSeq = 0;
  #unacked = 0;
  #ackTimer = null;

  /** Everything the application can set; only `url` and `token` are needed. */
  constructor({
    url,
    token,
    WebSocket = globalThis.WebSocket,
    EventSource = globalThis.EventSource,
    sse = true,
    lastSeq = 0,
    backoff = { base: 500, cap: 30000, factor: 2 },
    ackDelay = 500,
    ackEvery = 50,
    openTimeout = 10000,
  } = {}) {
    if (!/^https?:\/\//.test(url ?? "")) {
      throw new TypeError(`pushd url must be http(s)://host[:port] (got ${url})`);
    }
    if (typeof token !== "function" && typeof token !== "string") {
      throw new TypeError("token must be a function returning (a promise of) a user token");
    }
    this.#url = url.replace(/\/+$/, "");
    this.#tokenGetter = typeof token === "function" ? token : () => token;
    this.#WebSocket = WebSocket;
    this.#EventSource = EventSource;
    this.#sseAllowed = sse;
    this.#backoff = { base: 500, cap: 30000, factor: 2, ...backoff };
    this.#ackDelay = ackDelay;
    this.#ackEvery = ackEvery;
    this.#openTimeout = openTimeout;
    /** The resume point: the highest seq handed over (settable before connect). */
    this.lastSeq = lastSeq;
  }

  /** "connecting" | "open" | "closed" | "stopped" (will not reconnect). */
  get state() {
    return this.#state;
  }

  /** "websocket", or "sse" once fallen back to Server-Sent Events. */
  get transport() {
    return this.#transport;
  }

  /** Listen to an event; returns a function that stops listening. */
  on(event, listener) {
    const listeners = this.#listeners.get(event);
    if (listeners === undefined) {
      throw new TypeError(`unknown event ${event}: one of ${EVENTS.join(", ")}`);
    }
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /** Start the connection loop; resolves once the first socket is welcomed, rejects if
   * the client stops before that (a refused token, an unknown user, ...). */
  connect() {
    if (this.#opened === null) {
      let resolve, reject;
      const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
      this.#opened = { promise, resolve, reject, settled: false };
      this.#running = this.#run();
    }
    return this.#opened.promise;
  }

  /** Mark notifications read: ids, or seqs of notifications this client received.
   * Needs the WebSocket: over SSE (no client frames) marking read is the application
   * backend's job (its API key: POST /api/notifications/{id}/read). */
  markRead(...idsOrSeqs) {
    const ids = idsOrSeqs
      .flat()
      .map((item) => (typeof item === "number" ? this.#idsBySeq.get(item) : item))
      .filter((id) => typeof id === "string" && id !== "");
    if (this.#transport === "sse") {
      throw new Error("markRead needs the WebSocket: over SSE, mark read through your backend");
    }
    if (this.#socket === null || this.#state !== "open") {
      throw new Error("not connected: mark read once the client is open again");
    }
    for (let start = 0; start < ids.length; start += READ_IDS_PER_FRAME) {
      const chunk = ids.slice(start, start + READ_IDS_PER_FRAME);
      this.#socket.send(JSON.stringify({ type: "read", ids: chunk }));
    }
  }

  /** Acknowledge what was handed over, close the socket, stop for good. */
  async close() {
    if (this.#socket !== null) this.#sendAck(this.#socket);
    this.#stop("closed by the application");
    this.#endSession?.();
    this.#wakeUp?.();
    await this.#running;
  }

  async #run() {
    let attempt = 0;
    let tokenRefused = false; // the last socket refused its token, and none opened since
    while (!this.#stopped) {
      this.#setState("connecting");
      const token = await this.#currentToken();
      if (token === null || this.#stopped) return;
      const closed = await this.#serveOnce(token);
      if (this.#stopped) return;
      this.#setState("closed", { code: closed.code, reason: closed.reason });
      if (closed.welcomed) {
        attempt = 0;
        tokenRefused = false;
      }
      const advice = adviceFor(closed.code);
      const why = `closed with ${closed.code}: ${closed.reason}`;
      if (advice === "stop") return this.#stop(why);
      if (advice === "new_token") {
        if (tokenRefused) return this.#stop(`${why} (also with the token asked for again)`);
        tokenRefused = true;
        this.#refusedToken = token;
        this.#token = null;
      }
      await this.#sleep(this.#backoffDelay(attempt));
      attempt += 1;
    }
  }

  async #currentToken() {
    if (this.#token !== null) return this.#token;
    let token;
    try {
      token = await this.#tokenGetter();
    } catch (error) {
      this.#stop(`the token getter failed: ${error}`);
      return null;
    }
    if (token === this.#refusedToken) {
      this.#stop("the token getter returned the token the server refused");
      return null;
    }
    this.#token = token;
    return token;
  }

  // Full jitter: uniform in [0, min(cap, base * factor ** attempt)] milliseconds.
  #backoffDelay(attempt) {
    const { base, cap, factor } = this.#backoff;
    return Math.random() * Math.min(cap, base * factor ** Math.min(attempt, 64));
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeUp = done;
    }).finally(() => (this.#wakeUp = null));
  }

  async #serveOnce(token) {
    if (this.#transport === "websocket" && typeof this.#WebSocket === "function") {
      const closed = await this.#serveSocket(token);
      if (closed.opened || !this.#canFallBack()) return closed;
      this.#transport = "sse"; // the socket could not even open: a proxy refusing upgrades
    }
    if (this.#canFallBack()) {
      this.#transport = "sse";
      return this.#serveStream(token);
    }
    const reason = "no WebSocket implementation: pass the WebSocket option";
    return { code: CLOSE_CODES.PROTOCOL_ERROR, reason, opened: false, welcomed: false };
  }

  #canFallBack() {
    return this.#sseAllowed && typeof this.#EventSource === "function";
  }

  #serveSocket(token) {
    return new Promise((resolve) => {
      let socket;
      try {
        socket = new this.#WebSocket(this.#url.replace(/^http/, "ws") + "/ws");
      } catch (error) {
        resolve({ code: null, reason: String(error), opened: false, welcomed: false });
        return;
      }
      let opened = false;
      let welcomed = false;
      const giveUp = setTimeout(() => socket.close(), this.#openTimeout);
      this.#endSession = () => socket.close(CLOSE_CODES.NORMAL);
      socket.onopen = () => {
        opened = true;
        const auth = { type: "auth", token, protocol: PROTOCOL };
        if (this.lastSeq > 0) auth.since = this.lastSeq;
        socket.send(JSON.stringify(auth));
      };
      socket.onmessage = (message) => {
        const frame = parseFrame(message.data);
        if (welcomed) return this.#handleFrame(frame, socket);
        if (frame.type !== "welcome") return;
        clearTimeout(giveUp);
        welcomed = true;
        this.#welcome(frame);
        this.#socket = socket;
        this.#setState("open");
      };
      const finish = (code, reason) => {
        if (finish.done) return;
        finish.done = true;
        clearTimeout(giveUp);
        clearTimeout(this.#ackTimer);
        this.#ackTimer = null;
        this.#socket = null;
        this.#endSession = null;
        resolve({ code, reason, opened, welcomed });
      };
      // A socket that fails to open may fire no close event after its error (Node 20's
      // WebSocket does not): the error alone ends the attempt then.
      socket.onerror = () => {
        if (!opened) finish(null, "the WebSocket could not be opened");
      };
      socket.onclose = (event) => {
        // 1005 (no code) and 1006 (no close frame): the network's doing, not the server's.
        const code = event.code === 1005 || event.code === 1006 ? null : event.code;
        finish(code, event.reason || "socket closed");
      };
    });
  }

  // Server-Sent Events (docs/protocol.md §6): the same stream, no client frames, so
  // no acks (written counts as acknowledged) and no read frames.
  #serveStream(token) {
    return new Promise((resolve) => {
      const query = new URLSearchParams({ token });
      if (this.lastSeq > 0) query.set("since", String(this.lastSeq));
      const source = new this.#EventSource(`${this.#url}/sse?${query}`);
      this.#source = source;
      let welcomed = false;
      const end = (result) => {
        source.close();
        this.#source = null;
        this.#endSession = null;
        resolve({ opened: true, welcomed, ...result });
      };
      this.#endSession = () => end({ code: CLOSE_CODES.NORMAL, reason: "closed" });
      source.addEventListener("welcome", (event) => {
        welcomed = true;
        this.#welcome(JSON.parse(event.data));
        this.#setState("open");
      });
      for (const type of ["notification", "gap", "read", "updated", "retracted"]) {
        source.addEventListener(type, (event) => this.#handleFrame(JSON.parse(event.data)));
      }
      // No refresh on a stream: reopen it with a new token (and `since`) instead.
      source.addEventListener("token_expiring", () =>
        end({ code: CLOSE_CODES.SESSION_EXPIRED, reason: "token expiring: reopening" }),
      );
      source.addEventListener("error", (event) => {
        if (typeof event.data === "string") {
          const frame = parseFrame(event.data);
          if (frame.close_code !== undefined) end({ code: frame.close_code, reason: frame.message });
          return; // an error inside the stream (since_ahead) ends nothing
        }
        // The browser's own connection error: EventSource retries by itself with
        // Last-Event-ID, unless the server refused the stream (then it is CLOSED; a
        // 401 cannot be told from a network error here, so reconnect with a new token).
        if (source.readyState === 2) {
          this.#token = null;
          end({ code: null, reason: "the stream could not be opened" });
        } else {
          this.#setState("connecting");
        }
      });
    });
  }

  #welcome(frame) {
    // Below what was asked (`since_ahead`): the server's stream restarts there.
    if (this.lastSeq > 0) this.lastSeq = Math.min(this.lastSeq, frame.since);
    this.#ackedSeq = Math.max(frame.ack_seq ?? 0, 0);
  }

  #handleFrame(frame, socket = null) {
    switch (frame.type) {
      case "notification":
      case "gap": {
        const covered = frame.type === "gap" ? frame.to_seq : frame.seq;
        if (covered <= this.lastSeq) return; // a resume replaying what was handed over
        this.lastSeq = covered;
        if (frame.type === "notification") this.#remember(frame.seq, frame.id);
        this.#emit(frame.type, frame);
        if (socket !== null) this.#ackSoon(socket);
        return;
      }
      case "read":
      case "updated":
      case "retracted":
        return this.#emit(frame.type, frame);
      case "token_expiring":
        if (socket !== null) this.#refresh(socket);
        return;
      default:
        return; // protocol 1.3: ignore frame types not known
    }
  }

  #remember(seq, id) {
    this.#idsBySeq.set(seq, id);
    if (this.#idsBySeq.size > REMEMBERED_IDS) {
      this.#idsBySeq.delete(this.#idsBySeq.keys().next().value);
    }
  }

  // Renew the socket's token before it expires (docs/protocol.md §1); a getter that
  // fails leaves the socket to close with 4002, and the loop then asks again.
  async #refresh(socket) {
    try {
      const token = await this.#tokenGetter();
      this.#token = token;
      if (socket.readyState === 1) socket.send(JSON.stringify({ type: "refresh", token }));
    } catch (error) {
      reportError(error);
    }
  }

  #ackSoon(socket) {
    this.#unacked += 1;
    if (this.#unacked >= this.#ackEvery) return this.#sendAck(socket);
    this.#ackTimer ??= setTimeout(() => this.#sendAck(socket), this.#ackDelay);
  }

  #sendAck(socket) {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    this.#unacked = 0;
    if (this.lastSeq <= this.#ackedSeq || socket.readyState !== 1) return;
    socket.send(JSON.stringify({ type: "ack", seq: this.lastSeq }));
    this.#ackedSeq = this.lastSeq;
  }

  #setState(state, details = {}) {
    if (this.#stopped && state !== "stopped") return;
    this.#state = state;
    if (state === "open" && !this.#opened.settled) {
      this.#opened.settled = true;
      this.#opened.resolve();
    }
    this.#emit("state", { state, ...details });
  }

  #stop(reason) {
    if (this.#stopped) return;
    this.#setState("stopped", { reason });
    this.#stopped = true;
    if (this.#opened !== null && !this.#opened.settled) {
      this.#opened.settled = true;
      this.#opened.reject(new Error(`pushd client stopped: ${reason}`));
    }
  }

  #emit(event, payload) {
    for (const listener of this.#listeners.get(event)) {
      try {
        listener(payload);
      } catch (error) {
        reportError(error); // one listener's bug must not stop the stream
      }
    }
  }
}

function parseFrame(text) {
  try {
    const frame = JSON.parse(text);
    return frame !== null && typeof frame === "object" ? frame : {};
  } catch {
    return {};
  }
}

function reportError(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error(error);
}
