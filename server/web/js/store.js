// What the page remembers in this browser (localStorage, per server origin): the sign-in
// (tokens.js), the session to resume after a reload, and the user's choices. A damaged
// entry is ignored rather than trusted.
//
// Every tab of the origin shares the one record. A write merges its keys into what is
// stored now instead of writing this tab's whole copy back: otherwise a tab could put
// back a refresh token another tab has already used, and the next refresh with it would
// end the login (see tokens.js).

const KEY = "vpdesk.web.v1";

const DEFAULTS = Object.freeze({
  token: null,
  expiresAt: 0, // seconds since the epoch, as the server gives it
  refreshToken: null,
  refreshExpiresAt: 0,
  tokenLifetime: 0, // seconds the access token was issued for; 0: unknown (a record from before refresh)
  clockSkew: 0, // server clock minus this device's, in seconds
  user: null,
  sessionId: null,
  listen: null, // channel ids to listen to; null: not chosen yet (listen to all)
  muted: [],
  talk: null,
  mode: "hold",
  voiceProcessing: true,
});

/** The keys of the sign-in, which another tab may change under this one. */
const AUTH_KEYS = ["token", "expiresAt", "refreshToken", "refreshExpiresAt", "tokenLifetime", "clockSkew"];
/** A sign-in is worth resuming while it has this many seconds left. */
const SIGNED_IN_MARGIN_S = 30;

export class Store {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    this.data = { ...DEFAULTS, muted: [], ...this._read() }; // no array shared between stores
    this.saved = true; // false after a write failed: then this copy is newer than the stored one
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
      this.storage.setItem(KEY, JSON.stringify({ ...this.data, ...this._read(), ...values }));
      this.saved = true;
    } catch (error) {
      this.saved = false;
      console.warn(`vpdesk: cannot save settings: ${error.message}`);
    }
  }

  /** Take the sign-in as stored now (another tab may have refreshed it or signed out). */
  reloadAuth() {
    if (!this.saved) return;
    const stored = this._read();
    for (const key of AUTH_KEYS) this.data[key] = key in stored ? stored[key] : DEFAULTS[key];
  }

  /** A sign-in to go back into: an access token with time left, or a refresh token that can get one. */
  signedIn(nowSeconds = Date.now() / 1000) {
    const now = nowSeconds + (this.data.clockSkew || 0) + SIGNED_IN_MARGIN_S;
    const d = this.data;
    return (Boolean(d.token) && d.expiresAt > now) || (Boolean(d.refreshToken) && d.refreshExpiresAt > now);
  }

  /** Forget the sign-in and session; keep the user's preferences. */
  signOut() {
    this.set({ token: null, expiresAt: 0, refreshToken: null, refreshExpiresAt: 0, tokenLifetime: 0, user: null, sessionId: null });
  }
}
