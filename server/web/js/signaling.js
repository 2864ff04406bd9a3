// The signaling WebSocket of PROTOCOL.md: numbered requests, their replies, and events.

export const CLOSE_UNAUTHORIZED = 4001; // the sign-in is over (reason: the server's words)
export const CLOSE_RATE_LIMITED = 4008; // too many requests: reconnect after a pause

/** A request the server answered with ok: false; `code` is the protocol's error code. */
export class ServerError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = "ServerError";
    this.code = code;
  }
}

/** The link closed (or never opened) before the reply came. */
export class LinkDown extends Error {
  constructor(message) {
    super(message);
    this.name = "LinkDown";
  }
}

export function websocketUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

export class Signaling {
  /**
   * onEvent(message): every server event (a frame without an id).
   * onClose({code, reason}): once, when the socket closes for any reason after opening.
   */
  constructor(ws, { onEvent, onClose }) {
    this.ws = ws;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.closed = false;
    ws.addEventListener("message", (event) => this._receive(event.data));
    ws.addEventListener("close", (event) => this._closed(event.code, event.reason));
  }

  /** Resolves with an open Signaling, or rejects with LinkDown. */
  static open(url, handlers, timeoutMs = 8000) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (error) {
        reject(new LinkDown(`cannot open ${url}: ${error.message}`));
        return;
      }
      const timer = setTimeout(() => {
        ws.close();
        reject(new LinkDown("the server did not answer in time"));
      }, timeoutMs);
      ws.addEventListener("open", () => {
        clearTimeout(timer);
        resolve(new Signaling(ws, handlers));
      }, { once: true });
      ws.addEventListener("close", () => {
        clearTimeout(timer);
        reject(new LinkDown("the server cannot be reached"));
      }, { once: true });
    });
  }

  /** Send a request; resolves with the reply's fields, rejects ServerError or LinkDown. */
  request(type, fields = {}, timeoutMs = 10000) {
    if (this.closed) return Promise.reject(new LinkDown("not connected"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LinkDown(`no answer to ${type}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...fields, id, type }));
    });
  }

  close(code = 1000, reason = "") {
    if (!this.closed) this.ws.close(code, reason);
  }

  _receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      console.warn("vpdesk: ignored a frame that is not JSON");
      return;
    }
    if (message === null || typeof message !== "object") return;
    if (message.id === undefined || message.id === null) {
      if (typeof message.type === "string") this.onEvent(message);
      return;
    }
    const waiter = this.pending.get(message.id);
    if (!waiter) return; // a reply after its timeout
    this.pending.delete(message.id);
    clearTimeout(waiter.timer);
    if (message.ok) waiter.resolve(message);
    else {
      const error = message.error || {};
      waiter.reject(new ServerError(error.code || "internal", error.message));
    }
  }

  _closed(code, reason) {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new LinkDown("connection closed"));
    }
    this.pending.clear();
    this.onClose({ code, reason });
  }
}
