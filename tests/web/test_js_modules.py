"""The web page's pure modules (server/web/js/), unit-tested inside Chromium.

Each test imports one module on a blank page (tests/web/js_harness.py), runs a few
scenarios in one page.evaluate (the `page` fixture, conftest.py) and returns what they produced; the assertions are here,
in Python. PTT scenarios follow tests/vpdesk/test_core_ptt.py (the console's controller,
which ptt.js ports). Nothing waits on real time: the PTT clock is injected.
"""

from __future__ import annotations

from playwright.async_api import Page

from tests.web.js_harness import FAKE_STORAGE_JS, import_and_run

CH = 7  # the channel PTT scenarios talk on

GRANTED = [{"kind": "mic_on"}, {"kind": "tone", "name": "talk_permit"}]
ENDED = [{"kind": "mic_off"}, {"kind": "release", "channel": CH}, {"kind": "tone", "name": "end_of_tx"}]
REQUEST = [{"kind": "request", "channel": CH}]
GIVE_BACK = [{"kind": "release", "channel": CH}]


# --- ptt.js ------------------------------------------------------------------------

# make(): a controller talking on CH, connected unless told, with a clock the scenario
# moves by hand (clock.t, milliseconds). talking(): press and get granted.
PTT_HELPERS = """
  const CH = 7;
  function make({ mode = Mode.HOLD, target = CH, connected = true } = {}) {
    const clock = { t: 1000 };
    const ptt = new PttController({ mode, clock: () => clock.t });
    ptt.target = target;
    if (connected) ptt.setConnected(true);
    return { ptt, clock };
  }
  function talking(ptt, source = "button") {
    const press = ptt.press(source);
    const grant = ptt.onGranted(CH, 60000);
    return { press, grant, state: ptt.state };
  }
"""


async def run_ptt(page: Page, body: str, arg=None):
    return await import_and_run(
        page, "ptt.js", "{PttController, Mode, TxState, DENIED_SHOW_MS}", PTT_HELPERS + body, arg
    )


async def test_ptt_hold_press_grant_release_and_several_sources(page: Page):
    r = await run_ptt(
        page,
        """
        const out = {};
        { // one source: press, grant, release
          const { ptt } = make();
          out.initial = [ptt.state, ptt.channel, ptt.mode];
          out.press = ptt.press("key");
          out.requesting = [ptt.state, ptt.channel];
          out.grant = ptt.onGranted(CH, 60000);
          out.duplicateGrant = ptt.onGranted(CH, 60000);
          out.transmitting = [ptt.state, ptt.channel];
          out.release = ptt.release("key");
          out.idle = [ptt.state, ptt.channel];
        }
        { // button, key, pedal: only the last release ends it
          const { ptt } = make();
          out.several = { talking: talking(ptt, "button") };
          out.several.joins = [ptt.press("key"), ptt.press("pedal")];
          out.several.held = [...ptt.held].sort();
          out.several.firstReleases = [ptt.release("button"), ptt.release("pedal")];
          out.several.stillOn = ptt.state;
          out.several.lastRelease = ptt.release("key");
          out.several.after = ptt.state;
        }
        { // a source pressed before the grant counts
          const { ptt } = make();
          out.early = { press: ptt.press("key"), join: ptt.press("pedal"), release: ptt.release("key") };
          out.early.state = ptt.state;
          out.early.grant = ptt.onGranted(CH, 60000);
          out.early.lastRelease = ptt.release("pedal");
        }
        { // releasing a source never pressed, twice, or auto-repeat
          const { ptt } = make();
          out.stray = { idle: ptt.release("pedal"), talking: talking(ptt, "key") };
          out.stray.pedal = ptt.release("pedal");
          out.stray.repeats = [ptt.press("key"), ptt.press("key")];
          out.stray.stateAfterRepeats = ptt.state;
          out.stray.key = ptt.release("key");
          out.stray.again = ptt.release("key");
          out.stray.state = ptt.state;
        }
        { // the target applies to the next press; the talk goes on where it began
          const { ptt } = make();
          talking(ptt, "key");
          ptt.target = 9;
          out.retarget = { channel: ptt.channel, release: ptt.release("key"), next: ptt.press("key") };
        }
        return out;
        """,
    )
    assert r["initial"] == ["idle", None, "hold"]
    assert r["press"] == REQUEST
    assert r["requesting"] == ["requesting", CH]
    assert r["grant"] == GRANTED
    assert r["duplicateGrant"] == [], "a second grant for the floor we hold does nothing"
    assert r["transmitting"] == ["transmitting", CH]
    assert r["release"] == ENDED
    assert r["idle"] == ["idle", None]

    several = r["several"]
    assert several["talking"] == {"press": REQUEST, "grant": GRANTED, "state": "transmitting"}
    assert several["joins"] == [[], []], "sources joining a transmission ask for nothing"
    assert several["held"] == ["button", "key", "pedal"]
    assert several["firstReleases"] == [[], []]
    assert several["stillOn"] == "transmitting"
    assert several["lastRelease"] == ENDED
    assert several["after"] == "idle"

    early = r["early"]
    assert early["press"] == REQUEST
    assert early["join"] == [], "the request in flight serves both sources"
    assert early["release"] == []
    assert early["state"] == "requesting", "the pedal is still down"
    assert early["grant"] == GRANTED
    assert early["lastRelease"] == ENDED

    stray = r["stray"]
    assert stray["idle"] == []
    assert stray["pedal"] == [], "a source never pressed must not end the key's transmission"
    assert stray["repeats"] == [[], []], "keyboard auto-repeat"
    assert stray["stateAfterRepeats"] == "transmitting"
    assert stray["key"] == ENDED, "one release ends it: sources are a set, not a counter"
    assert stray["again"] == []
    assert stray["state"] == "idle"

    assert r["retarget"] == {
        "channel": CH,
        "release": ENDED,
        "next": [{"kind": "request", "channel": 9}],
    }


async def test_ptt_release_before_the_grant_hands_the_floor_back(page: Page):
    r = await run_ptt(
        page,
        """
        const out = {};
        { // let go before the answer: the grant is given straight back
          const { ptt } = make();
          ptt.press("key");
          out.release = ptt.release("key");
          out.cancelling = [ptt.state, ptt.channel];
          out.grant = ptt.onGranted(CH, 60000);
          out.after = ptt.state;
          out.pressAgain = ptt.press("key");
        }
        { // press again while cancelling: the request in flight serves again
          const { ptt } = make();
          ptt.press("key");
          ptt.release("key");
          out.repress = { press: ptt.press("key"), state: ptt.state };
          out.repress.grant = ptt.onGranted(CH, 60000);
          out.repress.after = ptt.state;
        }
        { // a grant nobody asked for (idle, another channel) is handed back
          const { ptt } = make();
          out.stale = { idle: ptt.onGranted(3, 60000), state: ptt.state };
          ptt.press("key");
          out.stale.otherChannel = ptt.onGranted(3, 60000);
          out.stale.stillRequesting = ptt.state;
        }
        return out;
        """,
    )
    assert r["release"] == []
    assert r["cancelling"] == ["cancelling", CH]
    assert r["grant"] == GIVE_BACK, "no microphone, no talk-permit tone: just give it back"
    assert r["after"] == "idle"
    assert r["pressAgain"] == REQUEST, "nothing is stuck"

    assert r["repress"] == {"press": [], "state": "requesting", "grant": GRANTED, "after": "transmitting"}

    assert r["stale"] == {
        "idle": [{"kind": "release", "channel": 3}],
        "state": "idle",
        "otherChannel": [{"kind": "release", "channel": 3}],
        "stillRequesting": "requesting",
    }


async def test_ptt_toggle_mode_and_switching_modes(page: Page):
    r = await run_ptt(
        page,
        """
        const out = {};
        { // a press starts, the next press (any source) stops, releases do nothing
          const { ptt } = make({ mode: Mode.TOGGLE });
          out.press = ptt.press("button");
          out.release = ptt.release("button");
          out.requesting = ptt.state;
          out.grant = ptt.onGranted(CH, 60000);
          out.otherSource = ptt.press("pedal");
          out.otherRelease = ptt.release("pedal");
          out.after = ptt.state;
        }
        { // a second press before the grant cancels; a third takes the request back
          const { ptt } = make({ mode: Mode.TOGGLE });
          ptt.press("key");
          ptt.release("key");
          out.cancel = { press: ptt.press("key"), state: ptt.state };
          ptt.release("key");
          out.cancel.third = ptt.press("key");
          out.cancel.thirdState = ptt.state;
          out.cancel.grant = ptt.onGranted(CH, 60000);
          out.cancel.after = ptt.state;
        }
        { // auto-repeat does not toggle
          const { ptt } = make({ mode: Mode.TOGGLE });
          talking(ptt, "key");
          out.repeat = { press: ptt.press("key"), state: ptt.state };
        }
        { // setMode ends a transmission (a toggle talk with nothing held would never end)
          const { ptt } = make({ mode: Mode.TOGGLE });
          talking(ptt, "key");
          ptt.release("key");
          out.switchWhileTalking = { effects: ptt.setMode(Mode.HOLD), mode: ptt.mode, state: ptt.state };
        }
        { // setMode while requesting cancels; the grant that still comes is handed back
          const { ptt } = make();
          ptt.press("key");
          out.switchWhileRequesting = { effects: ptt.setMode(Mode.TOGGLE), state: ptt.state };
          out.switchWhileRequesting.grant = ptt.onGranted(CH, 60000);
        }
        { // the same mode again changes nothing
          const { ptt } = make();
          talking(ptt, "key");
          out.sameMode = { effects: ptt.setMode(Mode.HOLD), state: ptt.state };
        }
        return out;
        """,
    )
    assert r["press"] == REQUEST
    assert r["release"] == []
    assert r["requesting"] == "requesting", "a release does not cancel in toggle mode"
    assert r["grant"] == GRANTED
    assert r["otherSource"] == ENDED, "any source stops a toggle transmission"
    assert r["otherRelease"] == []
    assert r["after"] == "idle"

    assert r["cancel"] == {
        "press": [],
        "state": "cancelling",
        "third": [],  # the request still in flight serves again
        "thirdState": "requesting",
        "grant": GRANTED,
        "after": "transmitting",
    }
    assert r["repeat"] == {"press": [], "state": "transmitting"}
    assert r["switchWhileTalking"] == {"effects": ENDED, "mode": "hold", "state": "idle"}
    assert r["switchWhileRequesting"] == {"effects": [], "state": "cancelling", "grant": GIVE_BACK}
    assert r["sameMode"] == {"effects": [], "state": "transmitting"}


async def test_ptt_denied_and_failed_requests(page: Page):
    r = await run_ptt(
        page,
        """
        const out = { showMs: DENIED_SHOW_MS };
        { // busy: tone and message with the holder, DENIED for DENIED_SHOW_MS, no queue
          const { ptt, clock } = make();
          ptt.press("key");
          out.denied = ptt.onDenied(CH, "Alice");
          out.deniedState = [ptt.state, ptt.deniedHolder, ptt.channel];
          out.lateGrant = ptt.onGranted(CH, 60000);
          out.stateAfterLateGrant = ptt.state;
          clock.t += DENIED_SHOW_MS - 1;
          out.justBefore = ptt.state;
          clock.t += 1;
          out.expired = ptt.state;
          ptt.release("key");
          out.pressAgain = ptt.press("key");
          out.holderAfterNewRequest = ptt.deniedHolder;
          out.grantAgain = ptt.onGranted(CH, 60000);
        }
        { // pressing again while DENIED still shows asks again
          const { ptt } = make();
          ptt.press("key");
          ptt.onDenied(CH, "Bob");
          ptt.release("key");
          out.whileShown = { state: ptt.state, press: ptt.press("key") };
          out.whileShown.after = ptt.state;
        }
        { // no holder name; a denial after letting go still shows; other channels ignored
          const { ptt } = make();
          ptt.press("key");
          out.otherChannel = { effects: ptt.onDenied(CH + 1, "Bob"), state: ptt.state };
          ptt.release("key");
          out.anonymous = { effects: ptt.onDenied(CH, null), state: ptt.state, holder: ptt.deniedHolder };
          out.idleDenial = ptt.onDenied(CH, "Carol");
        }
        { // failed (error reply, timeout): idle with the reason, once
          const { ptt } = make();
          ptt.press("mouse");
          out.failedOther = ptt.onFailed(CH + 1, "nope");
          out.failed = ptt.onFailed(CH, "you are not a member of this channel");
          out.failedState = ptt.state;
          out.failedAgain = ptt.onFailed(CH, "again");
          ptt.release("mouse");
          out.pressAfterFailed = ptt.press("mouse");
        }
        return out;
        """,
    )
    assert r["showMs"] > 0
    assert r["denied"] == [
        {"kind": "tone", "name": "busy"},
        {"kind": "message", "text": "Channel busy: Alice is speaking"},
    ]
    assert r["deniedState"] == ["denied", "Alice", None]
    assert r["lateGrant"] == GIVE_BACK, "no queue: a floor freed later is not taken by itself"
    assert r["stateAfterLateGrant"] == "denied"
    assert r["justBefore"] == "denied"
    assert r["expired"] == "idle", "DENIED reads as idle once DENIED_SHOW_MS has passed"
    assert r["pressAgain"] == REQUEST
    assert r["holderAfterNewRequest"] is None
    assert r["grantAgain"] == GRANTED

    assert r["whileShown"] == {"state": "denied", "press": REQUEST, "after": "requesting"}

    assert r["otherChannel"] == {"effects": [], "state": "requesting"}
    assert r["anonymous"] == {
        "effects": [
            {"kind": "tone", "name": "busy"},
            {"kind": "message", "text": "Channel busy: someone else is speaking"},
        ],
        "state": "denied",
        "holder": None,
    }
    assert r["idleDenial"] == [], "a denial with no request in flight is ignored"

    assert r["failedOther"] == []
    assert r["failed"] == [
        {"kind": "tone", "name": "busy"},
        {"kind": "message", "text": "Cannot talk: you are not a member of this channel"},
    ]
    assert r["failedState"] == "idle"
    assert r["failedAgain"] == [], "nothing in progress any more"
    assert r["pressAfterFailed"] == REQUEST


REVOKES = {
    "max_duration": ("end_of_tx", "Transmission ended: maximum talk time reached"),
    "preempted": ("emergency", "Cut off by an emergency call"),
    "removed": ("busy", "Transmission ended: you were removed from the channel"),
    "disconnected": ("busy", "Transmission ended: the server lost your session"),
    "a-future-reason": ("busy", "Transmission ended by the server"),
}


async def test_ptt_revokes_stop_the_microphone_with_their_tone(page: Page):
    r = await run_ptt(
        page,
        """
        const out = { reasons: {} };
        for (const reason of arg) {
          const { ptt } = make();
          talking(ptt, "key");
          const effects = ptt.onRevoked(CH, reason);
          out.reasons[reason] = {
            effects,
            state: ptt.state,
            release: ptt.release("key"), // the server freed the floor: nothing to send
            press: ptt.press("key"),
          };
        }
        const { ptt } = make();
        out.idle = ptt.onRevoked(CH, "max_duration");
        talking(ptt);
        out.otherChannel = ptt.onRevoked(CH + 1, "preempted");
        out.stillTalking = ptt.state;
        return out;
        """,
        list(REVOKES),
    )
    for reason, (tone, text) in REVOKES.items():
        assert r["reasons"][reason] == {
            "effects": [
                {"kind": "mic_off"},
                {"kind": "tone", "name": tone},
                {"kind": "message", "text": text},
            ],
            "state": "idle",
            "release": [],
            "press": REQUEST,
        }, reason
    assert r["idle"] == []
    assert r["otherChannel"] == []
    assert r["stillTalking"] == "transmitting"


async def test_ptt_refusals_outages_release_all_and_talk_time(page: Page):
    r = await run_ptt(
        page,
        """
        const out = {};
        { // not connected: refused; connecting makes the next press work
          const { ptt } = make({ connected: false });
          out.offline = { press: ptt.press("pedal"), state: ptt.state, connected: ptt.connected };
          ptt.release("pedal");
          out.offline.connect = ptt.setConnected(true);
          out.offline.pressAgain = ptt.press("pedal");
        }
        { // no target: refused; choosing a channel makes the next press work
          const { ptt } = make({ target: null });
          out.noTarget = { press: ptt.press("key"), state: ptt.state };
          ptt.release("key");
          ptt.target = 4;
          out.noTarget.pressAgain = ptt.press("key");
        }
        { // connection lost while transmitting: microphone off, nothing sent
          const { ptt } = make();
          talking(ptt, "key");
          out.lostTalking = { effects: ptt.onConnectionLost(), state: ptt.state, connected: ptt.connected };
          out.lostTalking.release = ptt.release("key");
          out.lostTalking.press = ptt.press("key");
        }
        { // lost while requesting (through setConnected(false)): a straggling grant is dropped
          const { ptt } = make();
          ptt.press("key");
          out.lostRequesting = { effects: ptt.setConnected(false), state: ptt.state };
          out.lostRequesting.grant = ptt.onGranted(CH, 60000);
        }
        { // lost while idle: nothing to say
          const { ptt } = make();
          out.lostIdle = ptt.onConnectionLost();
        }
        { // releaseAll (focus lost): ends a stuck transmission, forgets every source
          const { ptt } = make();
          talking(ptt, "key");
          ptt.press("pedal");
          out.releaseAll = { effects: ptt.releaseAll(), held: ptt.held.size, state: ptt.state };
          out.releaseAll.keyUp = ptt.release("key");
          out.releaseAll.nothingLeft = ptt.releaseAll();
        }
        { // releaseAll while requesting: cancels; the grant is handed back
          const { ptt } = make();
          ptt.press("key");
          out.releaseAllRequesting = { effects: ptt.releaseAll(), state: ptt.state };
          out.releaseAllRequesting.grant = ptt.onGranted(CH, 60000);
        }
        { // talkRemainingMs counts down with the injected clock
          const { ptt, clock } = make();
          out.remaining = { idle: ptt.talkRemainingMs() };
          ptt.press("key");
          out.remaining.requesting = ptt.talkRemainingMs();
          ptt.onGranted(CH, 60000);
          out.remaining.start = ptt.talkRemainingMs();
          clock.t += 12500;
          out.remaining.later = ptt.talkRemainingMs();
          clock.t += 60000;
          out.remaining.over = ptt.talkRemainingMs();
          ptt.release("key");
          out.remaining.released = ptt.talkRemainingMs();
          ptt.press("key");
          ptt.onGranted(CH); // no max_ms in the reply: no count-down
          out.remaining.unlimited = ptt.talkRemainingMs();
        }
        return out;
        """,
    )
    assert r["offline"] == {
        "press": [
            {"kind": "refused", "reason": "not_connected"},
            {"kind": "message", "text": "Cannot talk: not connected"},
        ],
        "state": "idle",
        "connected": False,
        "connect": [],
        "pressAgain": REQUEST,
    }
    assert r["noTarget"] == {
        "press": [
            {"kind": "refused", "reason": "no_channel"},
            {"kind": "message", "text": "Cannot talk: pick a channel to talk on"},
        ],
        "state": "idle",
        "pressAgain": [{"kind": "request", "channel": 4}],
    }

    lost = r["lostTalking"]
    assert lost["effects"] == [
        {"kind": "mic_off"},
        {"kind": "tone", "name": "busy"},
        {"kind": "message", "text": "Transmission ended: connection lost"},
    ], "no release: nothing can be sent"
    assert lost["state"] == "idle"
    assert lost["connected"] is False
    assert lost["release"] == []
    assert lost["press"][0] == {"kind": "refused", "reason": "not_connected"}

    assert r["lostRequesting"] == {
        "effects": [{"kind": "message", "text": "Connection lost before the floor was granted"}],
        "state": "idle",
        "grant": [],  # neither the microphone nor a release on a dead link
    }
    assert r["lostIdle"] == []

    assert r["releaseAll"] == {"effects": ENDED, "held": 0, "state": "idle", "keyUp": [], "nothingLeft": []}
    assert r["releaseAllRequesting"] == {"effects": [], "state": "cancelling", "grant": GIVE_BACK}

    assert r["remaining"] == {
        "idle": None,
        "requesting": None,
        "start": 60000,
        "later": 47500,
        "over": 0,
        "released": None,
        "unlimited": None,
    }


# --- channels.js -------------------------------------------------------------------

CHANNELS = [
    {"id": 1, "name": "Alpha", "team": None, "event": None},
    {"id": 2, "name": "Bravo", "team": None, "event": None},
    {"id": 3, "name": "Charlie", "team": None, "event": None},
]


async def test_channel_board_choices_and_floors(page: Page):
    r = await import_and_run(
        page,
        "channels.js",
        "{ChannelBoard}",
        """
        const channels = arg;
        const sorted = (set) => [...set].sort((a, b) => a - b);
        const state = (b) => ({ listen: sorted(b.listen), muted: sorted(b.muted), talk: b.talk });
        const out = {};

        const fresh = new ChannelBoard();
        out.empty = { ...state(fresh), choices: fresh.choices() };
        // Not-a-channel entries are dropped from the list itself.
        fresh.setChannels([...channels, null, { id: "4", name: "bad id" }, { name: "no id" }],
                          { listen: null, muted: [], talk: null });
        out.firstSignIn = { ...state(fresh), ids: fresh.channels.map((c) => c.id) };

        const saved = new ChannelBoard();
        saved.setChannels(channels, { listen: [2, 9], muted: [3, 8], talk: 3 });
        out.saved = state(saved);
        out.savedChoices = saved.choices();
        const again = new ChannelBoard();
        again.setChannels(channels, JSON.parse(JSON.stringify(saved.choices())));
        out.roundTrip = state(again);

        const none = new ChannelBoard();
        none.setChannels(channels, { listen: [], muted: undefined, talk: 42 });
        out.listenToNone = state(none);
        none.setChannels([], { listen: [1], muted: [1], talk: 1 });
        out.noChannels = state(none);

        const board = new ChannelBoard();
        board.setChannels(channels, { listen: null, muted: [], talk: 1 });
        out.names = [board.nameOf(2), board.nameOf(42), board.has(3), board.has(42), board.get(42)];
        const ann = { user_id: 5, name: "Ann" };
        const bob = { user_id: 6, name: "Bob" };
        board.floorTaken(2, ann, "2024-01-01T00:00:00Z");
        board.floorTaken(42, ann, "x"); // not a channel of ours
        board.floorTaken(1, null, "x"); // no holder
        out.taken = [board.holder(1), board.holder(2), board.holder(42)];
        board.applyFloor(3, { state: "taken", holder: bob, since: "s" });
        board.applyFloor(2, { state: "idle" });
        out.applied = [board.holder(2), board.holder(3)];
        out.since3 = board.floors.get(3)?.since;
        board.applyFloor(3, null);
        out.appliedNull = board.holder(3);
        board.floorTaken(1, ann, "a");
        board.floorTaken(3, bob, "b");
        board.mids.set(1, "1");
        board.mids.set(3, "3");
        // Channel 3 goes away: its floor, mid and choices go with it.
        board.setChannels(channels.slice(0, 2), { listen: [1, 3], muted: [3], talk: 3 });
        out.afterRemoval = {
          ...state(board),
          floors: sorted(board.floors.keys()),
          mids: sorted(board.mids.keys()),
          holder1: board.holder(1),
        };
        return out;
        """,
        CHANNELS,
    )
    nothing = {"listen": [], "muted": [], "talk": None}
    assert r["empty"] == {**nothing, "choices": nothing}
    assert r["firstSignIn"] == {"listen": [1, 2, 3], "muted": [], "talk": 1, "ids": [1, 2, 3]}, (
        "never chosen: listen to all, talk on the first"
    )
    assert r["saved"] == {"listen": [2], "muted": [3], "talk": 3}, "unknown ids dropped"
    assert r["savedChoices"] == {"listen": [2], "muted": [3], "talk": 3}
    assert r["roundTrip"] == r["saved"]
    assert r["listenToNone"] == {"listen": [], "muted": [], "talk": 1}, (
        "an empty saved list is a choice, not 'never chosen'; an unknown talk falls back to the first"
    )
    assert r["noChannels"] == {"listen": [], "muted": [], "talk": None}

    assert r["names"] == ["Bravo", "channel 42", True, False, None]
    assert r["taken"] == [None, {"user_id": 5, "name": "Ann"}, None]
    assert r["applied"] == [None, {"user_id": 6, "name": "Bob"}]
    assert r["since3"] == "s"
    assert r["appliedNull"] is None
    assert r["afterRemoval"] == {
        "listen": [1],
        "muted": [],
        "talk": 1,
        "floors": [1],
        "mids": [1],
        "holder1": {"user_id": 5, "name": "Ann"},
    }


# --- store.js ----------------------------------------------------------------------

STORE_HELPERS = FAKE_STORAGE_JS + """
  const defaults = (s) => Object.fromEntries(arg.keys.map((key) => [key, s.get(key)]));
"""

DEFAULTS = {
    "token": None,
    "expiresAt": 0,
    "refreshToken": None,
    "refreshExpiresAt": 0,
    "tokenLifetime": 0,
    "clockSkew": 0,
    "user": None,
    "sessionId": None,
    "listen": None,
    "muted": [],
    "talk": None,
    "mode": "hold",
    "voiceProcessing": True,
}
SIGNED_OUT = {"token": None, "expiresAt": 0, "refreshToken": None, "refreshExpiresAt": 0,
              "tokenLifetime": 0, "user": None, "sessionId": None}


async def run_store(page: Page, body: str):
    return await import_and_run(page, "store.js", "{Store}", STORE_HELPERS + body, {"keys": list(DEFAULTS)})


async def test_store_reads_saves_and_survives_damage(page: Page):
    r = await run_store(
        page,
        """
        const out = {};
        out.empty = defaults(new Store(new FakeStorage()));
        out.damaged = {};
        for (const text of ["{not json", "null", "[1, 2]", "42", '"text"', ""]) {
          out.damaged[text] = defaults(new Store(new FakeStorage({ [KEY]: text })));
        }
        out.unreadable = defaults(new Store({
          getItem() { throw new DOMException("denied", "SecurityError"); },
          setItem() {},
        }));
        out.partial = defaults(new Store(new FakeStorage({ [KEY]: '{"mode": "toggle", "talk": 3}' })));

        const storage = new FakeStorage();
        const store = new Store(storage);
        store.set({ token: "t1", expiresAt: 5000, user: { id: 4, name: "Dee" }, sessionId: "s1",
                    listen: [1, 2], muted: [2], talk: 1, mode: "toggle", lastUsername: "dee" });
        out.saved = JSON.parse(storage.getItem(KEY));
        const reread = new Store(storage);
        out.reread = { ...defaults(reread), lastUsername: reread.get("lastUsername") };

        out.signedIn = {
          now: [store.signedIn(4969), store.signedIn(4970), store.signedIn(4971), store.signedIn(6000)],
          noToken: (() => {
            const s = new Store(new FakeStorage());
            s.set({ expiresAt: 1e12 });
            return s.signedIn(0);
          })(),
          defaultClock: (() => {
            const s = new Store(new FakeStorage());
            s.set({ token: "t", expiresAt: Date.now() / 1000 + 3600 });
            const fresh = s.signedIn();
            s.set({ expiresAt: Date.now() / 1000 - 1 });
            return [fresh, s.signedIn()];
          })(),
        };

        store.signOut();
        out.signedOut = {
          ...defaults(store), signedIn: store.signedIn(0), lastUsername: store.get("lastUsername"),
        };
        out.signedOutSaved = JSON.parse(storage.getItem(KEY));

        // A full (or forbidden) storage: the change holds in memory, nothing is thrown.
        const full = new Store({
          getItem: () => null,
          setItem() { throw new DOMException("full", "QuotaExceededError"); },
        });
        full.set({ mode: "toggle" });
        out.fullStorage = full.get("mode");
        return out;
        """,
    )
    assert r["empty"] == DEFAULTS
    for text, values in r["damaged"].items():
        assert values == DEFAULTS, f"stored {text!r} is damaged: defaults expected"
    assert r["unreadable"] == DEFAULTS
    assert r["partial"] == {**DEFAULTS, "mode": "toggle", "talk": 3}

    expected = {
        **DEFAULTS,
        "token": "t1",
        "expiresAt": 5000,
        "user": {"id": 4, "name": "Dee"},
        "sessionId": "s1",
        "listen": [1, 2],
        "muted": [2],
        "talk": 1,
        "mode": "toggle",
    }
    assert r["saved"] == {**expected, "lastUsername": "dee"}
    assert r["reread"] == {**expected, "lastUsername": "dee"}

    # expiresAt 5000 with a 30 s margin: signed in until 4970.
    assert r["signedIn"]["now"] == [True, False, False, False]
    assert r["signedIn"]["noToken"] is False
    assert r["signedIn"]["defaultClock"] == [True, False]

    preferences = {"listen": [1, 2], "muted": [2], "talk": 1, "mode": "toggle", "voiceProcessing": True, "clockSkew": 0}
    assert r["signedOut"] == {**SIGNED_OUT, **preferences, "signedIn": False, "lastUsername": "dee"}
    assert r["signedOutSaved"] == {**SIGNED_OUT, **preferences, "lastUsername": "dee"}, (
        "signing out is saved, preferences kept"
    )
    assert r["fullStorage"] == "toggle"


# --- signaling.js ------------------------------------------------------------------

# FakeSocket: the WebSocket surface Signaling uses. serverSays() delivers a frame,
# serverCloses() the close event; close() records the call and closes a tick later, as a
# real socket does. settle(): a promise's outcome as plain data.
SIGNALING_HELPERS = """
  class FakeSocket extends EventTarget {
    constructor() { super(); this.sent = []; this.closeCalls = []; }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code, reason) {
      this.closeCalls.push([code, reason]);
      setTimeout(() => this.serverCloses(code, reason), 0);
    }
    serverSays(frame) {
      const data = typeof frame === "string" ? frame : JSON.stringify(frame);
      this.dispatchEvent(new MessageEvent("message", { data }));
    }
    serverCloses(code, reason) { this.dispatchEvent(new CloseEvent("close", { code, reason })); }
  }
  const settle = (promise) => promise.then(
    (value) => ({ resolved: value }),
    (error) => ({
      rejected: error.name, code: error.code ?? null, message: error.message,
      isServerError: error instanceof ServerError, isLinkDown: error instanceof LinkDown,
    }),
  );
  function connect() {
    const ws = new FakeSocket();
    const events = [];
    const closes = [];
    const sig = new Signaling(ws, { onEvent: (m) => events.push(m), onClose: (c) => closes.push(c) });
    return { ws, sig, events, closes };
  }
"""


async def run_signaling(page: Page, body: str):
    return await import_and_run(
        page,
        "signaling.js",
        "{Signaling, ServerError, LinkDown, websocketUrl, CLOSE_UNAUTHORIZED}",
        SIGNALING_HELPERS + body,
    )


async def test_signaling_requests_replies_and_events(page: Page):
    r = await run_signaling(
        page,
        """
        const out = {};
        const { ws, sig, events } = connect();
        const hello = settle(sig.request("hello", { token: "t", resume: null }));
        const join = settle(sig.request("join", { channel: 3 }));
        const leave = settle(sig.request("leave", { channel: 3 }));
        const sneaky = settle(sig.request("floor_release", { id: 99, type: "evil", channel: 2 }));
        out.sent = [...ws.sent];
        // Replies out of order, each to its own request.
        ws.serverSays({ id: 3, ok: false });
        ws.serverSays({ id: 2, ok: false, error: { code: "not_member", message: "not in channel 3" } });
        ws.serverSays({ id: 1, ok: true, session: "s1", channels: [] });
        ws.serverSays({ id: 4, ok: true });
        out.hello = await hello;
        out.join = await join;
        out.leave = await leave;
        out.sneaky = await sneaky;

        // Events have no id; anything else that is no request's reply is dropped quietly.
        ws.serverSays({ type: "floor_taken", channel: 3, holder: { user_id: 2, name: "Bo" } });
        ws.serverSays("not json {");
        ws.serverSays("42");
        ws.serverSays("null");
        ws.serverSays({ channel: 3 }); // no type
        ws.serverSays({ id: 77, ok: true }); // nobody asked
        ws.serverSays({ id: 1, ok: true }); // answered already
        ws.serverSays({ type: "floor_idle", channel: 3, id: null });
        out.events = events;

        // No answer in time: LinkDown; the late reply is ignored.
        const slow = settle(sig.request("slow", {}, 1));
        out.slow = await slow;
        ws.serverSays({ id: 5, ok: true });
        const after = settle(sig.request("ping"));
        ws.serverSays({ id: 6, ok: true, pong: 1 });
        out.after = await after;
        out.url = [
          websocketUrl({ protocol: "https:", host: "radio.example:8443" }),
          websocketUrl({ protocol: "http:", host: "127.0.0.1:8080" }),
        ];
        return out;
        """,
    )
    assert r["sent"] == [
        {"token": "t", "resume": None, "id": 1, "type": "hello"},
        {"channel": 3, "id": 2, "type": "join"},
        {"channel": 3, "id": 3, "type": "leave"},
        {"channel": 2, "id": 4, "type": "floor_release"},
    ], "numbered from 1; the caller's fields never override id or type"
    assert r["hello"] == {"resolved": {"id": 1, "ok": True, "session": "s1", "channels": []}}
    assert r["join"] == {
        "rejected": "ServerError",
        "code": "not_member",
        "message": "not in channel 3",
        "isServerError": True,
        "isLinkDown": False,
    }
    assert r["leave"]["rejected"] == "ServerError"
    assert r["leave"]["code"] == "internal", "ok: false without an error object"
    assert r["sneaky"] == {"resolved": {"id": 4, "ok": True}}
    assert r["events"] == [
        {"type": "floor_taken", "channel": 3, "holder": {"user_id": 2, "name": "Bo"}},
        {"type": "floor_idle", "channel": 3, "id": None},
    ]
    assert r["slow"]["rejected"] == "LinkDown"
    assert r["slow"]["isLinkDown"] is True
    assert "slow" in r["slow"]["message"]
    assert r["after"] == {"resolved": {"id": 6, "ok": True, "pong": 1}}, "still working after junk frames"
    assert r["url"] == ["wss://radio.example:8443/ws", "ws://127.0.0.1:8080/ws"]


async def test_signaling_close_rejects_pending_and_reports_once(page: Page):
    r = await run_signaling(
        page,
        """
        const out = {};
        { // the server goes away with requests in flight
          const { ws, sig, closes } = connect();
          const a = settle(sig.request("join", { channel: 1 }));
          const b = settle(sig.request("join", { channel: 2 }));
          ws.serverCloses(1006, "gone");
          out.pending = [await a, await b];
          ws.serverCloses(1006, "again");
          out.closes = closes;
          out.closed = sig.closed;
          const sentBefore = ws.sent.length;
          out.afterClose = await settle(sig.request("hello"));
          out.sentAfterClose = ws.sent.length - sentBefore;
          sig.close();
          out.closeCallsAfterClose = ws.closeCalls;
        }
        { // our own close(): the socket is asked once; onClose when it has closed
          const { ws, sig, closes } = connect();
          const pending = settle(sig.request("hello"));
          sig.close(CLOSE_UNAUTHORIZED, "bye");
          out.own = { pending: await pending, closeCalls: ws.closeCalls, closes };
        }
        return out;
        """,
    )
    for outcome in r["pending"]:
        assert outcome["rejected"] == "LinkDown"
        assert outcome["isLinkDown"] is True
    assert r["closes"] == [{"code": 1006, "reason": "gone"}], "onClose once, with the first close"
    assert r["closed"] is True
    assert r["afterClose"]["rejected"] == "LinkDown"
    assert r["sentAfterClose"] == 0
    assert r["closeCallsAfterClose"] == [], "closing a closed link does not touch the socket"
    assert r["own"]["pending"]["rejected"] == "LinkDown"
    assert r["own"]["closeCalls"] == [[4001, "bye"]]
    assert r["own"]["closes"] == [{"code": 4001, "reason": "bye"}]


# --- media.js ----------------------------------------------------------------------


async def test_microphone_problem_for_each_get_user_media_error(page: Page):
    r = await import_and_run(
        page,
        "media.js",
        "{microphoneProblemFor, MicrophoneProblem}",
        """
        const errors = {
          NotAllowedError: new DOMException("Permission denied", "NotAllowedError"),
          SecurityError: new DOMException("insecure", "SecurityError"),
          NotFoundError: new DOMException("Requested device not found", "NotFoundError"),
          OverconstrainedError: new OverconstrainedError("deviceId", "no such device"),
          NotReadableError: new DOMException("Could not start audio source", "NotReadableError"),
          AbortError: new DOMException("aborted", "AbortError"),
          TypeError: new TypeError("bad constraints"),
          plainObject: { name: "SomethingNew", message: "odd" },
        };
        const out = {};
        for (const [label, error] of Object.entries(errors)) {
          const problem = microphoneProblemFor(error);
          out[label] = {
            kind: problem.kind, name: problem.name, message: problem.message,
            isProblem: problem instanceof MicrophoneProblem, isError: problem instanceof Error,
          };
        }
        out.nothing = microphoneProblemFor(undefined).kind;
        return out;
        """,
    )
    expected = {
        "NotAllowedError": "denied",
        "SecurityError": "denied",
        "NotFoundError": "absent",
        "OverconstrainedError": "absent",
        "NotReadableError": "in_use",
        "AbortError": "in_use",
        "TypeError": "failed",
        "plainObject": "failed",
    }
    for label, kind in expected.items():
        problem = r[label]
        assert problem["kind"] == kind, label
        assert problem["name"] == "MicrophoneProblem", label
        assert problem["isProblem"] and problem["isError"], label
        assert problem["message"], label
    assert "Allow the microphone" in r["NotAllowedError"]["message"]
    assert "No microphone was found" in r["NotFoundError"]["message"]
    assert "another app" in r["NotReadableError"]["message"]
    assert "bad constraints" in r["TypeError"]["message"], "an unknown failure says what it was"
    assert r["nothing"] == "failed"


async def test_a_denial_forgets_its_holder_once_it_stops_showing(page: Page):
    r = await run_ptt(
        page,
        """
        const { ptt, clock } = make();
        ptt.press("button");
        ptt.onDenied(CH, "Alice");
        const shown = [ptt.state, ptt.deniedHolder];
        clock.t += DENIED_SHOW_MS;
        return { shown, after: [ptt.state, ptt.deniedHolder] };
        """,
    )
    assert r["shown"] == ["denied", "Alice"]
    assert r["after"] == ["idle", None]


async def test_stores_share_no_default_list(page: Page):
    r = await import_and_run(
        page,
        "store.js",
        "{Store}",
        """
        const empty = () => ({ getItem: () => null, setItem: () => {} });
        const first = new Store(empty());
        first.get("muted").push(5);
        return new Store(empty()).get("muted");
        """,
    )
    assert r == []
