// A small EventSource over fetch, for Node, which has none (browsers do). It follows
// the parts of the WHATWG EventSource that pushd's client relies on: named events as
// MessageEvents, `id:` kept as lastEventId and sent back as Last-Event-ID when it
// reconnects by itself after a response ends, CLOSED (2) after a refusal (not 200).
// The stream it reads is the real GET /sse of a running pushd.

export class FetchEventSource extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;

  #abort = new AbortController();

  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    this.lastEventId = "";
    this.#run();
  }

  close() {
    this.readyState = 2;
    this.#abort.abort();
  }

  async #run() {
    while (this.readyState !== 2) {
      try {
        await this.#readOnce();
      } catch (error) {
        if (this.readyState === 2) return;
      }
      if (this.readyState === 2) return;
      this.readyState = 0;
      this.dispatchEvent(new Event("error"));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async #readOnce() {
    const headers = this.lastEventId ? { "Last-Event-ID": this.lastEventId } : {};
    const response = await fetch(this.url, { headers, signal: this.#abort.signal });
    if (response.status !== 200) {
      await response.body?.cancel();
      this.readyState = 2;
      this.dispatchEvent(new Event("error"));
      throw new Error(`refused with ${response.status}`);
    }
    this.readyState = 1;
    this.dispatchEvent(new Event("open"));
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        this.#dispatchBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  #dispatchBlock(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a comment: the heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") this.lastEventId = value;
    }
    if (data.length === 0) return;
    const event = new MessageEvent(type, { data: data.join("\n"), lastEventId: this.lastEventId });
    this.dispatchEvent(event);
  }
}
