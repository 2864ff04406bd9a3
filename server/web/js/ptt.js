// Push-to-talk state: presses and server answers in, effects out. No DOM, no network:
// the page carries out the effects (send floor_request, open the microphone, play a
// tone), so this file is tested on its own. Same rules as the console's
// vpdesk/core/ptt.py: the server decides the floor, the client only asks.

export const Mode = Object.freeze({ HOLD: "hold", TOGGLE: "toggle" });

export const TxState = Object.freeze({
  IDLE: "idle",
  REQUESTING: "requesting", // pressed, floor_request sent, waiting for the answer
  CANCELLING: "cancelling", // let go before the answer: a grant is handed straight back
  TRANSMITTING: "transmitting", // floor granted, microphone on air
  DENIED: "denied", // busy: shown for DENIED_SHOW_MS, then reads as idle
});

export const DENIED_SHOW_MS = 2500;

// What each floor_revoked reason (PROTOCOL.md) means to a field user: [tone, message].
const REVOKE_FEEDBACK = {
  max_duration: ["end_of_tx", "Transmission ended: maximum talk time reached"],
  preempted: ["emergency", "Cut off by an emergency call"],
  removed: ["busy", "Transmission ended: you were removed from the channel"],
  disconnected: ["busy", "Transmission ended: the server lost your session"],
};

export class PttController {
  /** clock(): milliseconds, injectable so tests need no waiting. */
  constructor({ mode = Mode.HOLD, clock = () => performance.now() } = {}) {
    this.mode = mode;
    this.clock = clock;
    this.target = null; // channel id the next press talks on
    this.connected = false;
    this.held = new Set(); // sources: "button", "space", ...
    this._state = TxState.IDLE;
    this._channel = null;
    this._deniedUntil = 0;
    this._deniedHolder = null;
    this.txSince = null;
    this.maxMs = null;
  }

  get state() {
    if (this._state === TxState.DENIED && this.clock() >= this._deniedUntil) return TxState.IDLE;
    return this._state;
  }

  /** Who held the floor at the last denial, while the denial shows. */
  get deniedHolder() {
    return this.state === TxState.DENIED ? this._deniedHolder : null;
  }

  /** The channel being requested or talked on; null when idle. */
  get channel() {
    const live = [TxState.REQUESTING, TxState.CANCELLING, TxState.TRANSMITTING];
    return live.includes(this._state) ? this._channel : null;
  }

  talkRemainingMs() {
    if (this._state !== TxState.TRANSMITTING || this.maxMs == null) return null;
    return Math.max(0, this.maxMs - (this.clock() - this.txSince));
  }

  setMode(mode) {
    // End what is in progress first: a toggle transmission with no source held would
    // never end once the mode is hold.
    const effects = mode !== this.mode ? this._endLocal() : [];
    this.mode = mode;
    return effects;
  }

  setConnected(connected) {
    if (!connected) return this.onConnectionLost();
    this.connected = true;
    return [];
  }

  press(source) {
    if (this.held.has(source)) return []; // keyboard auto-repeat
    this.held.add(source);
    const state = this.state;
    if (this.mode === Mode.TOGGLE && state === TxState.TRANSMITTING) return this._endTransmission();
    if (this.mode === Mode.TOGGLE && state === TxState.REQUESTING) {
      this._state = TxState.CANCELLING;
      return [];
    }
    if (state === TxState.CANCELLING) {
      this._state = TxState.REQUESTING; // pressed again: the request in flight serves
      return [];
    }
    if (state === TxState.REQUESTING || state === TxState.TRANSMITTING) return [];
    return this._request();
  }

  release(source) {
    if (!this.held.delete(source)) return [];
    if (this.mode === Mode.TOGGLE || this.held.size > 0) return [];
    if (this._state === TxState.TRANSMITTING) return this._endTransmission();
    if (this._state === TxState.REQUESTING) this._state = TxState.CANCELLING;
    return [];
  }

  /** The page lost focus or was hidden: releases may never come, so end now. */
  releaseAll() {
    this.held.clear();
    return this._endLocal();
  }

  onGranted(channel, maxMs = null) {
    if (this._state === TxState.REQUESTING && channel === this._channel) {
      this._state = TxState.TRANSMITTING;
      this.txSince = this.clock();
      this.maxMs = maxMs;
      return [{ kind: "mic_on" }, { kind: "tone", name: "talk_permit" }];
    }
    if (this._state === TxState.TRANSMITTING && channel === this._channel) return [];
    // Nobody wants this floor any more: give it back so no one is left holding it.
    if (this._state === TxState.CANCELLING && channel === this._channel) this._goIdle();
    return this.connected ? [{ kind: "release", channel }] : [];
  }

  onDenied(channel, holderName) {
    const asking = this._state === TxState.REQUESTING || this._state === TxState.CANCELLING;
    if (!asking || channel !== this._channel) return [];
    this._goIdle();
    this._state = TxState.DENIED;
    this._deniedUntil = this.clock() + DENIED_SHOW_MS;
    this._deniedHolder = holderName || null;
    const who = holderName ? `${holderName} is speaking` : "someone else is speaking";
    return [{ kind: "tone", name: "busy" }, { kind: "message", text: `Channel busy: ${who}` }];
  }

  /** The request failed (`tone: false`: quietly, e.g. too many requests). */
  onFailed(channel, reason, { tone = true } = {}) {
    const asking = this._state === TxState.REQUESTING || this._state === TxState.CANCELLING;
    if (!asking || channel !== this._channel) return [];
    this._goIdle();
    const message = { kind: "message", text: `Cannot talk: ${reason}` };
    return tone ? [{ kind: "tone", name: "busy" }, message] : [message];
  }

  onRevoked(channel, reason) {
    if (this._state !== TxState.TRANSMITTING || channel !== this._channel) return [];
    const [tone, text] = REVOKE_FEEDBACK[reason] || ["busy", "Transmission ended by the server"];
    this._goIdle();
    return [{ kind: "mic_off" }, { kind: "tone", name: tone }, { kind: "message", text }];
  }

  onConnectionLost() {
    this.connected = false;
    const state = this._state;
    this._goIdle();
    if (state === TxState.TRANSMITTING) {
      return [
        { kind: "mic_off" },
        { kind: "tone", name: "busy" },
        { kind: "message", text: "Transmission ended: connection lost" },
      ];
    }
    if (state === TxState.REQUESTING || state === TxState.CANCELLING) {
      return [{ kind: "message", text: "Connection lost before the floor was granted" }];
    }
    return [];
  }

  _request() {
    if (!this.connected) return [{ kind: "refused", reason: "not_connected" }, { kind: "message", text: "Cannot talk: not connected" }];
    if (this.target == null) return [{ kind: "refused", reason: "no_channel" }, { kind: "message", text: "Cannot talk: pick a channel to talk on" }];
    this._state = TxState.REQUESTING;
    this._channel = this.target;
    this._deniedHolder = null;
    return [{ kind: "request", channel: this.target }];
  }

  _endTransmission() {
    const channel = this._channel;
    this._goIdle();
    return [{ kind: "mic_off" }, { kind: "release", channel }, { kind: "tone", name: "end_of_tx" }];
  }

  _endLocal() {
    if (this._state === TxState.TRANSMITTING) return this._endTransmission();
    if (this._state === TxState.REQUESTING) this._state = TxState.CANCELLING;
    return [];
  }

  _goIdle() {
    this._state = TxState.IDLE;
    this._channel = null;
    this.txSince = null;
    this.maxMs = null;
  }
}
