// The sign-in's tokens. `hello` takes a short-lived access token (15 min by default); the
// refresh token that came with it gets a new pair from POST /api/refresh and is then dead:
// presenting a used one again ends the whole login on the server (it looks stolen). So
// one refresh at a time per browser (a Web Lock shared by the tabs of this origin), with
// the tokens read afresh from storage inside the lock, since another tab may have
// refreshed a moment ago.
//
// Times are the server's unix seconds: the clock offset measured from each answer's Date
// header keeps a phone whose clock is off from using expired tokens.
//
// Everything here runs on the page's one thread; `fetch`, `clock` and `locks` are
// injectable for the unit tests.

/** Before `hello` an access token must be valid this long more (or a third of its life when that is shorter). */
export const MIN_VALID_S = 60;
/** Still worth a `hello` when a refresh cannot be had just now: a session, once started, outlives its token. */
export const LAST_RESORT_S = 5;
/** After a refresh failed for want of network, the background waits this long before trying again. */
export const RETRY_AFTER_FAILURE_S = 10;
const LOCK_NAME = "vpdesk.web.refresh";

/** The server refused the sign-in (refresh token dead, login ended): sign in again. `reason`: the server's words. */
export class SignInEnded extends Error {
  constructor(reason) {
    super(reason || "sign-in expired");
    this.name = "SignInEnded";
    this.reason = reason || "expired";
  }
}

/** The sign-in form's answer was refused; `message` says why, for the form. */
export class LoginRefused extends Error {
  constructor(message) {
    super(message);
    this.name = "LoginRefused";
  }
}

/** No new token now (no network, a server error): try again later; the sign-in is still good. */
export class RefreshUnavailable extends Error {
  constructor(message) {
    super(message);
    this.name = "RefreshUnavailable";
  }
}

/** Seconds an access token of `lifetime` seconds must still be valid for before a `hello`. */
export function validityNeeded(lifetime) {
  return lifetime > 0 ? Math.min(MIN_VALID_S, lifetime / 3) : MIN_VALID_S;
}

/** What the sign-in form says when the server ended the sign-in for `reason` (close reason or error message). */
export function signInEndedMessage(reason = "") {
  const text = String(reason).toLowerCase();
  if (text.includes("password")) return "Your password was changed; sign in again with the new one.";
  if (text.includes("deleted") || text.includes("no longer exists")) return "Your account was removed; ask your dispatcher.";
  if (text.includes("logged out") || text.includes("revoked")) return "You were signed out; sign in again.";
  return "Your sign-in has expired; sign in again.";
}

/** The server's clock (unix seconds) when `response` arrived, from its Date header; null without one. */
export function serverNowFrom(response) {
  const date = Date.parse(response?.headers?.get?.("Date") ?? "");
  // The header is truncated to the second: the middle of that second is the best guess.
  return Number.isFinite(date) ? date / 1000 + 0.5 : null;
}

/** The store values for a login or refresh answer `body` received at local time `localNow`. */
export function tokenRecord(body, localNow, serverNow = null) {
  const now = serverNow ?? localNow;
  return {
    token: body.token,
    expiresAt: body.expires_at,
    refreshToken: body.refresh_token ?? null,
    refreshExpiresAt: body.refresh_expires_at ?? 0,
    tokenLifetime: Math.max(1, body.expires_at - now),
    clockSkew: now - localNow,
  };
}

export class TokenKeeper {
  /** store: a Store. fetch(url, init), clock() (local unix seconds), locks (navigator.locks or null). */
  constructor(store, { fetch = (...args) => window.fetch(...args), clock = () => Date.now() / 1000, locks = globalThis.navigator?.locks ?? null } = {}) {
    this.store = store;
    this.fetch = fetch;
    this.clock = clock;
    this.locks = locks;
    this.inflight = null;
    this.epoch = 0; // bumped by accept/forget: a refresh begun before is not saved
    this.failedAt = -Infinity;
  }

  serverNow() {
    return this.clock() + (this.store.get("clockSkew") || 0);
  }

  /** Seconds the stored access token is valid for (negative: expired; -Infinity: none). */
  remaining() {
    return this.store.get("token") ? this.store.get("expiresAt") - this.serverNow() : -Infinity;
  }

  /** The refresh threshold: before a hello, or (`ahead`) in the background, twice as early. */
  _threshold(ahead) {
    const needed = validityNeeded(this.store.get("tokenLifetime"));
    return ahead ? 2 * needed : needed;
  }

  _canRefresh() {
    const refreshToken = this.store.get("refreshToken");
    return Boolean(refreshToken) && this.store.get("refreshExpiresAt") > this.serverNow();
  }

  /** True when the background should refresh now: close to expiry, refreshable, not just failed. */
  dueInBackground() {
    if (this.inflight || !this._canRefresh()) return false;
    if (this.clock() - this.failedAt < RETRY_AFTER_FAILURE_S) return false;
    return this.remaining() < this._threshold(true);
  }

  /** Sign in with the form's name and password: resolves with the user, or rejects LoginRefused. */
  async login(username, password) {
    let response, body;
    try {
      response = await this.fetch("api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username, password }),
      });
      body = await response.json().catch(() => ({}));
    } catch {
      throw new LoginRefused("The server cannot be reached. Check the network and try again.");
    }
    if (response.status === 401) throw new LoginRefused("Wrong user name or password.");
    if (response.status === 429) {
      const wait = Math.ceil(Number(body.error?.retry_after ?? response.headers?.get?.("Retry-After")) || 60);
      throw new LoginRefused(`Too many failed attempts; try again in ${wait} s.`);
    }
    if (!response.ok || typeof body.token !== "string") {
      throw new LoginRefused(body.error?.message || `Sign-in failed (HTTP ${response.status}).`);
    }
    this.accept(body, response);
    return body.user;
  }

  /** Keep the tokens of a login (or refresh) answer. `response` (for its Date header) may be null. */
  accept(body, response = null) {
    this.epoch++;
    this.inflight = null;
    this.failedAt = -Infinity;
    this.store.set(tokenRecord(body, this.clock(), serverNowFrom(response)));
  }

  /** The server refused `token` in a hello: it must not be used again (a refresh follows). */
  refused(token) {
    this.store.reloadAuth();
    if (this.store.get("token") === token) this.store.set({ expiresAt: 0 });
  }

  /**
   * An access token valid long enough for a hello (`ahead`: the background's earlier
   * threshold), refreshing first when needed. Concurrent calls share one refresh.
   * Rejects SignInEnded (sign in again) or RefreshUnavailable (try again later).
   */
  fresh({ ahead = false } = {}) {
    if (this.inflight) return this.inflight;
    if (this.remaining() >= this._threshold(ahead)) return Promise.resolve(this.store.get("token"));
    const flight = this._underLock(() => this._refreshIfNeeded(ahead, this.epoch)).finally(() => {
      if (this.inflight === flight) this.inflight = null;
    });
    this.inflight = flight;
    return flight;
  }

  _underLock(work) {
    return this.locks ? this.locks.request(LOCK_NAME, work) : work();
  }

  async _refreshIfNeeded(ahead, epoch) {
    this.store.reloadAuth(); // another tab may have refreshed (or signed out) meanwhile
    if (this.remaining() >= this._threshold(ahead)) return this.store.get("token");
    if (!this._canRefresh()) return this._lastResort(new SignInEnded("expired"));
    let response, body;
    try {
      response = await this._postRefresh(this.store.get("refreshToken"));
      body = await response.json().catch(() => ({}));
    } catch (error) {
      this.failedAt = this.clock();
      return this._lastResort(new RefreshUnavailable(`cannot refresh the sign-in: ${error.message}`));
    }
    if ([400, 401, 403].includes(response.status)) throw new SignInEnded(body.error?.message || "expired");
    if (!response.ok || typeof body.token !== "string") {
      this.failedAt = this.clock();
      return this._lastResort(new RefreshUnavailable(`cannot refresh the sign-in (HTTP ${response.status})`));
    }
    if (epoch !== this.epoch) return body.token; // signed out (or in again) meanwhile: not ours to keep
    this.accept(body, response);
    return body.token;
  }

  _postRefresh(refreshToken) {
    return this.fetch("api/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: refreshToken }),
    });
  }

  /** The current token when it still allows a hello, else `error`. */
  _lastResort(error) {
    if (this.remaining() >= LAST_RESORT_S) return this.store.get("token");
    throw error;
  }

  /**
   * Sign-out: forget the tokens at once (the caller clears the store) and end the login
   * on the server in the background. Resolves true when the server confirmed it.
   */
  logout() {
    this.store.reloadAuth(); // another tab may hold newer tokens of this login
    const token = this.store.get("token");
    const refreshToken = this.store.get("refreshToken");
    const usable = this.remaining() >= LAST_RESORT_S;
    this.epoch++;
    this.inflight = null;
    return this._endLogin(usable ? token : null, refreshToken).catch(() => false);
  }

  async _endLogin(token, refreshToken) {
    if (!token && refreshToken) {
      // The access token is too old to say who we are: one refresh gets a usable one.
      const response = await this._postRefresh(refreshToken);
      if (!response.ok) return false; // the login is over already
      token = (await response.json()).token;
    }
    if (!token) return false;
    const response = await this.fetch("api/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    return response.ok;
  }

  /** Forget without telling the server (it ended the login itself). */
  forget() {
    this.epoch++;
    this.inflight = null;
  }
}
