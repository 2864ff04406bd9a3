// What the page remembers in this browser (localStorage, per server origin): the sign-in,
// the session to resume after a reload, and the user's choices. A damaged entry is
// ignored rather than trusted.

const KEY = "vpdesk.web.v1";

const DEFAULTS = Object.freeze({
  token: null,
  expiresAt: 0, // seconds since the epoch, as the server gives it
  user: null,
  sessionId: null,
  listen: null, // channel ids to listen to; null: not chosen yet (listen to all)
  muted: [],
  talk: null,
  mode: "hold",
  voiceProcessing: true,
});

export class Store {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    this.data = { ...DEFAULTS, muted: [], ...this._read() }; // no array shared between stores
  }

  _read() {
    try {
      const parsed = JSON.parse(this.storage.getItem(KEY) || "{}");
      return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
    } catch {
      return {};
    }
  }

  get(name) {
    return this.data[name];
  }

  set(values) {
    Object.assign(this.data, values);
    try {
      this.storage.setItem(KEY, JSON.stringify(this.data));
    } catch (error) {
      console.warn(`vpdesk: cannot save settings: ${error.message}`);
    }
  }

  signedIn(nowSeconds = Date.now() / 1000) {
    return Boolean(this.data.token) && this.data.expiresAt > nowSeconds + 30;
  }

  /** Forget the sign-in and session; keep the user's preferences. */
  signOut() {
    this.set({ token: null, expiresAt: 0, user: null, sessionId: null });
  }
}
