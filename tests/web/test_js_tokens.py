"""The page's sign-in tokens (server/web/js/tokens.js) and their keeping in store.js,
unit-tested inside Chromium on a blank page (the `page` fixture).

The server is a fake `fetch` answering real Response objects; the clock is a number the
scenario moves (`clock.t`, unix seconds), so nothing waits on real time. Two stores on one
FakeStorage are two tabs of one origin.
"""

from __future__ import annotations

from playwright.async_api import Page

from tests.web.js_harness import FAKE_STORAGE_JS, import_and_run

NAMES = "{TokenKeeper, SignInEnded, RefreshUnavailable, LoginRefused, validityNeeded, signInEndedMessage, serverNowFrom, tokenRecord}"

# clock: the keeper's clock. answer(status, body, headers): a JSON Response.
# net(routes): a fake fetch; routes maps a URL to [status, body, headers?], a function of
# the call returning one (or a promise of one), or an Error to throw; `calls` records
# {url, body, auth}. tokensAt(n): a login/refresh answer ("a<n>", "r<n>") issued now.
# keeper(routes): a TokenKeeper over a new Store, with that fake fetch.
TOKEN_HELPERS = FAKE_STORAGE_JS + """
  const { Store } = await import("/web/js/store.js");
  const clock = { t: 1000 };
  const answer = (status, body, headers = {}) =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
  function net(routes) {
    const calls = [];
    const fetch = async (url, init = {}) => {
      const call = { url, body: init.body ? JSON.parse(init.body) : null, auth: init.headers?.Authorization ?? null };
      calls.push(call);
      const route = routes[url];
      if (route instanceof Error) throw route;
      const [status, body, headers] = await (typeof route === "function" ? route(call) : route);
      return answer(status, body, headers);
    };
    return { fetch, calls };
  }
  const USER = { id: 4, name: "dee", role: "general" };
  const tokensAt = (n, ttl = 900) => ({
    token: `a${n}`, expires_at: clock.t + ttl, user: USER,
    refresh_token: `r${n}`, refresh_expires_at: clock.t + 86400,
  });
  function keeper(routes = {}, { storage = new FakeStorage(), locks = null } = {}) {
    const store = new Store(storage);
    const { fetch, calls } = net(routes);
    const tokens = new TokenKeeper(store, { fetch, clock: () => clock.t, locks });
    return { store, tokens, calls, storage };
  }
  const settle = (promise) => promise.then(
    (value) => ({ resolved: value }),
    (error) => ({ rejected: error.name, reason: error.reason ?? null, message: error.message }),
  );
  const auth = (s) => [s.get("token"), s.get("expiresAt"), s.get("refreshToken"), s.get("refreshExpiresAt")];
"""


async def run_tokens(page: Page, body: str):
    return await import_and_run(page, "tokens.js", NAMES, TOKEN_HELPERS + body)


async def test_how_long_a_token_must_last_what_the_form_says_and_who_is_signed_in(page: Page):
    r = await run_tokens(
        page,
        """
        const s = new Store(new FakeStorage());
        const at = (values, now) => { s.set(values); return s.signedIn(now); };
        const signedIn = [
          at({ token: "a", expiresAt: 2000, refreshToken: null, refreshExpiresAt: 0 }, 1000),
          at({ expiresAt: 900 }, 1000),
          at({ refreshToken: "r", refreshExpiresAt: 5000 }, 1000),
          at({}, 4969),
          at({}, 4971),
          at({ clockSkew: -100 }, 5060), // this device's clock is 100 s fast
        ];
        return {
          signedIn,
          needed: [900, 180, 20, 0, undefined].map(validityNeeded),
          messages: ["logged out", "password changed", "user deleted", "token revoked", "token expired", "",
                     "refresh token reused", "user no longer exists"].map(signInEndedMessage),
          serverNow: [
            serverNowFrom(new Response("", { headers: { Date: "Thu, 01 Jan 2026 00:00:10 GMT" } })),
            serverNowFrom(new Response("")),
            serverNowFrom(null),
          ],
          record: tokenRecord({ token: "a", expires_at: 2000, refresh_token: "r", refresh_expires_at: 9000 }, 1000, 1100),
          oldServer: tokenRecord({ token: "a", expires_at: 2000 }, 1000),
        };
        """,
    )
    assert r["needed"][:2] == [60, 60]
    assert abs(r["needed"][2] - 20 / 3) < 1e-9, "a short-lived token needs a third of its life"
    assert r["needed"][3:] == [60, 60], "unknown lifetime (a record from before refresh): 60 s"
    signed_out, password, deleted, revoked, expired, empty, reused, gone = r["messages"]
    assert "password was changed" in password
    assert "removed" in deleted and "removed" in gone
    assert "signed out" in signed_out and "signed out" in revoked
    for message in (expired, empty, reused):
        assert message == "Your sign-in has expired; sign in again."
    assert r["serverNow"] == [1767225610.5, None, None]
    assert r["record"] == {
        "token": "a", "expiresAt": 2000, "refreshToken": "r", "refreshExpiresAt": 9000,
        "tokenLifetime": 900, "clockSkew": 100,
    }
    assert r["oldServer"]["refreshToken"] is None
    assert r["oldServer"]["tokenLifetime"] == 1000
    # Signed in: an access token with 30 s left, or a refresh token with 30 s left.
    assert r["signedIn"] == [True, False, True, True, False, True]


async def test_fresh_refreshes_only_when_needed_and_once_for_concurrent_callers(page: Page):
    r = await run_tokens(
        page,
        """
        const out = {};
        const k = keeper({ "api/refresh": () => [200, tokensAt(2)] });
        k.tokens.accept(tokensAt(1)); // valid until 1900, lifetime 900: 60 s before hello, 120 s ahead
        out.fresh = [await k.tokens.fresh(), await k.tokens.fresh({ ahead: true }), k.calls.length];
        clock.t = 1900 - 121;
        out.at121 = [k.tokens.dueInBackground(), await k.tokens.fresh({ ahead: true }), k.calls.length];
        clock.t = 1900 - 119;
        out.at119 = [k.tokens.dueInBackground(), await k.tokens.fresh(), k.calls.length];
        clock.t = 1900 - 59;
        const all = await Promise.all([k.tokens.fresh(), k.tokens.fresh(), k.tokens.fresh({ ahead: true })]);
        out.at59 = { all, calls: k.calls, auth: auth(k.store), dueAfter: k.tokens.dueInBackground() };
        out.saved = JSON.parse(k.storage.getItem(KEY)).refreshToken;

        // Short-lived tokens (20 s): a third of the life before hello, two thirds ahead.
        const s = keeper({ "api/refresh": () => [200, tokensAt(3, 20)] });
        clock.t = 5000;
        s.tokens.accept(tokensAt(2, 20));
        clock.t = 5006;
        out.short6 = [s.tokens.dueInBackground()];
        clock.t = 5007;
        out.short7 = [s.tokens.dueInBackground(), await s.tokens.fresh(), s.calls.length];
        out.short7.push(await s.tokens.fresh({ ahead: true }), s.calls.length, s.store.get("expiresAt"));

        // A token a hello refused is not used again, however long it looks valid.
        const h = keeper({ "api/refresh": () => [200, tokensAt(4)] });
        h.tokens.accept(tokensAt(3));
        h.tokens.refused("a3");
        out.refused = [await h.tokens.fresh(), h.calls.map((c) => c.body)];
        h.tokens.refused("not-the-current-one");
        out.refusedOther = [await h.tokens.fresh(), h.calls.length];
        return out;
        """,
    )
    assert r["fresh"] == ["a1", "a1", 0]
    assert r["at121"] == [False, "a1", 0]
    assert r["at119"] == [True, "a1", 0], "due in the background, still good for a hello"
    at59 = r["at59"]
    assert at59["all"] == ["a2", "a2", "a2"]
    assert [(c["url"], c["body"]) for c in at59["calls"]] == [("api/refresh", {"refresh_token": "r1"})], (
        "three callers, one refresh: a second use of r1 would end the login"
    )
    assert at59["auth"] == ["a2", 1841 + 900, "r2", 1841 + 86400]
    assert at59["dueAfter"] is False
    assert r["saved"] == "r2"
    assert r["short6"] == [False]
    assert r["short7"] == [True, "a2", 0, "a3", 1, 5027]
    assert r["refused"] == ["a4", [{"refresh_token": "r3"}]]
    assert r["refusedOther"] == ["a4", 1]


async def test_a_refused_refresh_ends_the_sign_in_and_no_network_waits(page: Page):
    r = await run_tokens(
        page,
        """
        const out = {};
        { // the server refuses: SignInEnded with its words; the tokens are left as they were
          const k = keeper({ "api/refresh": [401, { error: { code: "unauthorized", message: "refresh token reused" } }] });
          k.tokens.accept(tokensAt(1));
          clock.t += 880;
          out.refused = [await settle(k.tokens.fresh()), auth(k.store)[0]];
          clock.t -= 880;
        }
        { // no network: a token with some life left still serves; the background waits 10 s
          const k = keeper({ "api/refresh": new TypeError("Failed to fetch") });
          k.tokens.accept(tokensAt(1));
          clock.t += 870; // 30 s left
          out.offline = [await settle(k.tokens.fresh()), k.tokens.dueInBackground()];
          clock.t += 9;
          out.offline.push(k.tokens.dueInBackground());
          clock.t += 1;
          out.offline.push(k.tokens.dueInBackground());
          clock.t += 30; // expired
          out.offlineExpired = await settle(k.tokens.fresh());
          clock.t -= 910;
        }
        { // a server error, the token gone: try again later
          const k = keeper({ "api/refresh": [503, { error: { code: "internal" } }] });
          k.tokens.accept(tokensAt(1));
          clock.t += 1000;
          out.serverError = await settle(k.tokens.fresh());
          clock.t -= 1000;
        }
        { // a record from before refresh (no refresh token): used while it lasts, then sign in
          const k = keeper();
          k.store.set({ token: "old", expiresAt: clock.t + 30 });
          out.old = [await settle(k.tokens.fresh()), k.tokens.dueInBackground()];
          k.store.set({ expiresAt: clock.t + 3 });
          out.old.push(await settle(k.tokens.fresh()), k.calls.length);
        }
        return out;
        """,
    )
    assert r["refused"] == [
        {"rejected": "SignInEnded", "reason": "refresh token reused", "message": "refresh token reused"},
        "a1",
    ]
    assert r["offline"] == [{"resolved": "a1"}, False, False, True]
    assert r["offlineExpired"]["rejected"] == "RefreshUnavailable"
    assert r["serverError"]["rejected"] == "RefreshUnavailable"
    assert "503" in r["serverError"]["message"]
    old_ok, old_due, old_gone, old_calls = r["old"]
    assert old_ok == {"resolved": "old"}
    assert old_due is False, "nothing to refresh with"
    assert old_gone["rejected"] == "SignInEnded"
    assert old_calls == 0


async def test_tabs_share_one_refresh_and_a_late_refresh_is_dropped(page: Page):
    r = await run_tokens(
        page,
        """
        const out = {};
        for (const locks of [navigator.locks, null]) {
          clock.t = 1000;
          const storage = new FakeStorage();
          const a = keeper({ "api/refresh": () => [200, tokensAt(2)] }, { storage, locks });
          a.tokens.accept(tokensAt(1));
          const b = keeper({ "api/refresh": () => [200, tokensAt(3)] }, { storage, locks });
          clock.t = 1900 - 30;
          // With the Web Lock both at once; without it (an insecure origin) one after the other.
          const got = locks ? await Promise.all([a.tokens.fresh(), b.tokens.fresh()])
                            : [await a.tokens.fresh(), await b.tokens.fresh()];
          b.store.set({ talk: 3 }); // tab b still held r1 in memory before its reload
          const reread = new Store(storage);
          out[locks ? "locked" : "sequential"] = {
            got, calls: a.calls.length + b.calls.length,
            stored: [reread.get("refreshToken"), reread.get("talk")],
          };
        }
        { // a tab writing its choices does not put back its stale refresh token
          const storage = new FakeStorage();
          const a = new Store(storage), b = new Store(storage);
          a.set({ token: "a1", refreshToken: "r1", mode: "hold" });
          b.set({ listen: [1] }); // b read storage before a's sign-in
          a.set({ token: "a2", refreshToken: "r2" });
          b.set({ mode: "toggle" });
          const c = new Store(storage);
          out.merged = [c.get("token"), c.get("refreshToken"), c.get("listen"), c.get("mode")];
          b.reloadAuth();
          out.reloaded = [b.get("token"), b.get("refreshToken"), b.get("mode")];
          a.signOut();
          b.reloadAuth();
          out.signedOutElsewhere = [b.get("token"), b.get("refreshToken"), b.signedIn(0)];
        }
        { // storage that cannot be written: the copy in memory is the truth
          const broken = new Store({ getItem: () => '{"token": "stale"}', setItem() { throw new DOMException("full", "QuotaExceededError"); } });
          broken.set({ token: "new" });
          broken.reloadAuth();
          out.unwritable = broken.get("token");
        }
        return out;
        """,
    )
    for mode in ("locked", "sequential"):
        assert r[mode] == {"got": ["a2", "a2"], "calls": 1, "stored": ["r2", 3]}, mode
    assert r["merged"] == ["a2", "r2", [1], "toggle"]
    assert r["reloaded"] == ["a2", "r2", "toggle"]
    assert r["signedOutElsewhere"] == [None, None, False]
    assert r["unwritable"] == "new"

    # A refresh finishing after a sign-out (or a new sign-in) is not kept.
    r = await run_tokens(
        page,
        """
        const out = {};
        let release;
        const k = keeper({ "api/refresh": () => new Promise((resolve) => (release = () => resolve([200, tokensAt(2)]))) });
        k.tokens.accept(tokensAt(1));
        clock.t += 880;
        const flight = k.tokens.fresh();
        await new Promise((resolve) => setTimeout(resolve, 0));
        k.tokens.forget();
        k.store.signOut();
        release();
        out.afterSignOut = [await flight, auth(k.store)];
        // And one finishing after a new sign-in leaves that sign-in's tokens alone.
        k.tokens.accept(tokensAt(5));
        clock.t += 880;
        const flight2 = k.tokens.fresh();
        await new Promise((resolve) => setTimeout(resolve, 0));
        k.tokens.accept(tokensAt(7));
        release();
        out.flight2 = await flight2;
        out.afterNewLogin = auth(k.store)[0];
        return out;
        """,
    )
    assert r["afterSignOut"] == ["a2", [None, 0, None, 0]]
    assert r["flight2"] == "a2"
    assert r["afterNewLogin"] == "a7"


async def test_login_and_logout_talk_to_the_server(page: Page):
    r = await run_tokens(
        page,
        """
        const out = {};
        const date = "Thu, 01 Jan 2026 00:00:00 GMT"; // 1767225600
        clock.t = 1767225600 - 100; // this device's clock is 100 s slow
        const ok = keeper({ "api/login": (call) => [200, { ...tokensAt(1), expires_at: 1767225600 + 900 }, { Date: date }] });
        out.ok = { user: await ok.tokens.login("dee", "pw"), call: ok.calls[0],
                   stored: [ok.store.get("token"), ok.store.get("refreshToken"), ok.store.get("clockSkew"),
                            ok.store.get("tokenLifetime")],
                   remaining: ok.tokens.remaining() };
        const failing = {
          wrong: [401, { error: { code: "unauthorized", message: "wrong user name or password" } }],
          throttled: [429, { error: { code: "rate_limited", message: "too many", retry_after: 42 } }, { "Retry-After": "42" }],
          headerOnly: [429, {}, { "Retry-After": "7" }],
          broken: [500, { error: { code: "internal", message: "database is locked" } }],
          offline: new TypeError("Failed to fetch"),
        };
        for (const [label, route] of Object.entries(failing)) {
          const k = keeper({ "api/login": route });
          out[label] = [await settle(k.tokens.login("dee", "pw")), k.store.get("token")];
        }
        return out;
        """,
    )
    ok = r["ok"]
    assert ok["user"] == {"id": 4, "name": "dee", "role": "general"}
    assert ok["call"] == {"url": "api/login", "body": {"username": "dee", "password": "pw"}, "auth": None}
    assert ok["stored"] == ["a1", "r1", 100.5, 899.5]
    assert abs(ok["remaining"] - 899.5) < 1e-6, "expiry counted on the server's clock"
    expected = {
        "wrong": "Wrong user name or password.",
        "throttled": "Too many failed attempts; try again in 42 s.",
        "headerOnly": "Too many failed attempts; try again in 7 s.",
        "broken": "database is locked",
        "offline": "The server cannot be reached. Check the network and try again.",
    }
    for label, message in expected.items():
        outcome, token = r[label]
        assert outcome["rejected"] == "LoginRefused", label
        assert outcome["message"] == message, label
        assert token is None, label

    # Sign-out ends the login with whatever token still works.
    r = await run_tokens(
        page,
        """
        const out = {};
        const routes = { "api/logout": [200, {}], "api/refresh": () => [200, tokensAt(2)] };
        const fresh = keeper(routes);
        fresh.tokens.accept(tokensAt(1));
        out.fresh = [await fresh.tokens.logout(), fresh.calls];

        const stale = keeper(routes);
        stale.tokens.accept(tokensAt(1));
        clock.t += 898; // 2 s left: too little to be sure
        out.stale = [await stale.tokens.logout(), stale.calls];
        clock.t -= 898;

        const over = keeper({ "api/refresh": [401, { error: { code: "unauthorized" } }] });
        over.tokens.accept(tokensAt(1));
        clock.t += 2000;
        out.over = [await over.tokens.logout(), over.calls.length];
        clock.t -= 2000;

        const offline = keeper({ "api/logout": new TypeError("Failed to fetch") });
        offline.tokens.accept(tokensAt(1));
        out.offline = await offline.tokens.logout();

        const nothing = keeper(routes);
        out.nothing = [await nothing.tokens.logout(), nothing.calls.length];
        return out;
        """,
    )
    assert r["fresh"] == [True, [{"url": "api/logout", "body": None, "auth": "Bearer a1"}]]
    assert r["stale"] == [
        True,
        [
            {"url": "api/refresh", "body": {"refresh_token": "r1"}, "auth": None},
            {"url": "api/logout", "body": None, "auth": "Bearer a2"},
        ],
    ]
    assert r["over"] == [False, 1]
    assert r["offline"] is False
    assert r["nothing"] == [False, 0]
