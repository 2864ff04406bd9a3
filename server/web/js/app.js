// The field user's radio: sign-in, one session with the server (hello, offer, joins),
// push-to-talk, and getting back into the same channels after a drop or a reload. The
// tokens (short-lived access, rotated refresh) are tokens.js's: every hello gets one with
// time left, and the background refreshes ahead of expiry.
// Network replies can arrive after the link they belong to is gone: every connection
// attempt has a generation number, and work for an older one is dropped.

import { ChannelBoard } from "./channels.js";
import { MediaLink, openMicrophone } from "./media.js";
import { Mode, PttController, TxState } from "./ptt.js";
import { CLOSE_RATE_LIMITED, CLOSE_UNAUTHORIZED, LinkDown, ServerError, Signaling, websocketUrl } from "./signaling.js";
import { Store } from "./store.js";
import { LoginRefused, SignInEnded, TokenKeeper, signInEndedMessage } from "./tokens.js";
import { TonePlayer } from "./tones.js";
import { View } from "./view.js";

const CLIENT = { name: "vpdesk-web", version: "0.1.0" };
const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 10000];
// Closed for too many requests: the first retry waits this far down RETRY_DELAYS_MS (4 s).
const RATE_LIMITED_RETRY_INDEX = 3;
const TONES = ["talk_permit", "end_of_tx", "busy"];

export class App {
  constructor() {
    this.store = new Store();
    this.tokens = new TokenKeeper(this.store);
    this.board = new ChannelBoard();
    this.ptt = new PttController({ mode: this.store.get("mode") === Mode.TOGGLE ? Mode.TOGGLE : Mode.HOLD });
    this.tones = new TonePlayer("tones/");
    this.view = new View(this);
    this.signaling = null;
    this.media = null;
    this.user = null;
    this.microphone = null;
    this.micProblem = null;
    this.generation = 0;
    this.retries = 0;
    this.retryTimer = null;
    this.refusedOnce = false; // a hello refused this token once: refresh and try again, then give up
    this.wakeLock = null;
  }

  start() {
    this.view.setPreferences({ mode: this.ptt.mode, voiceProcessing: this.store.get("voiceProcessing") });
    window.addEventListener("online", () => this._reconnectSoon());
    document.addEventListener("visibilitychange", () => !document.hidden && this._holdScreenOn());
    // Browsers start audio only after a gesture: the first touch anywhere unblocks it.
    window.addEventListener("pointerdown", () => this.unblockSound(), { capture: true });
    window.addEventListener("keydown", () => this.unblockSound(), { capture: true });
    setInterval(() => this._tick(), 250);
    if (this.store.signedIn()) {
      this.user = this.store.get("user");
      this.tones.preload(TONES);
      this.view.showRadio(this.user);
      this._connect();
      this._openMicrophone();
    } else {
      this.store.signOut();
      this.view.showLogin({ username: this.store.get("lastUsername") || "" });
    }
    this._render();
  }

  // --- sign-in ----------------------------------------------------------------------

  async signIn(username, password) {
    if (!username || !password) {
      this.view.showLogin({ error: "Enter your user name and password.", username });
      return;
    }
    this.view.loginBusy(true);
    this.refusedOnce = false;
    let user;
    try {
      user = await this.tokens.login(username, password);
    } catch (error) {
      if (!(error instanceof LoginRefused)) throw error;
      this.view.loginBusy(false);
      this.view.showLogin({ error: error.message, username });
      return;
    }
    if (this.store.get("choicesUser") !== user.id) {
      // Another person on this browser: their channel choices are not this user's.
      this.store.set({ listen: null, muted: [], talk: null, choicesUser: user.id });
    }
    this.store.set({ user, sessionId: null, lastUsername: username });
    this.user = user;
    this.view.loginBusy(false);
    this.view.showRadio(this.user);
    this.tones.preload(TONES);
    this.retries = 0;
    this._connect();
    this._openMicrophone();
  }

  /** The Sign out button: end the login on the server too (in the background). */
  signOut() {
    this.tokens.logout();
    this._leave();
  }

  /** Back to the sign-in form (saying `error`); the user's choices stay for their next sign-in. */
  _leave(error = "") {
    this.generation++;
    clearTimeout(this.retryTimer);
    this.tokens.forget();
    this._dropLink(1000, "signed out");
    this.store.signOut();
    this.user = null;
    this.microphone?.stop();
    this.microphone = null;
    this.view.message("");
    this.view.notice("");
    this.view.linkNotice("");
    this.view.connection("offline");
    this.view.showLogin({ error, username: this.store.get("lastUsername") || "" });
  }

  /** The server ended the sign-in (`reason`: its words): back to the form, saying why. */
  _signInEnded(reason) {
    this._leave(signInEndedMessage(reason));
  }

  /** A hello refused `token`: an expired or unknown one gets one refresh and another try. */
  _helloRefused(reason, token) {
    if (/revoked/i.test(reason) || this.refusedOnce) return this._signInEnded(reason);
    this.refusedOnce = true;
    this.tokens.refused(token);
    this._connect();
  }

  async _refreshAhead() {
    try {
      await this.tokens.fresh({ ahead: true });
    } catch (error) {
      // No network: the keeper tries again later; a refused refresh ends the sign-in.
      if (error instanceof SignInEnded && this.user) this._signInEnded(error.reason);
    }
  }

  // --- the session ------------------------------------------------------------------

  async _connect() {
    clearTimeout(this.retryTimer);
    const generation = ++this.generation;
    const current = () => generation === this.generation;
    this._dropLink(1000, "reconnecting");
    this.view.connection(this.retries ? "reconnecting" : "connecting");
    let token = null;
    try {
      // Before the socket: the server closes one that says no hello for 10 s.
      token = await this.tokens.fresh();
      if (!current()) return;
      const signaling = await Signaling.open(websocketUrl(), {
        onEvent: (message) => current() && this._onEvent(message),
        onClose: (close) => current() && this._onClosed(close),
      });
      if (!current()) return signaling.close();
      this.signaling = signaling;
      const hello = await signaling.request("hello", {
        token,
        client: CLIENT,
        resume: this.store.get("sessionId"),
      });
      if (!current()) return;
      this.refusedOnce = false;
      this.user = hello.user;
      this.limits = hello.limits || {};
      this.store.set({ sessionId: hello.session, user: hello.user });
      this.board.setChannels(hello.channels || [], this._choices());
      this.view.showRadio(this.user);
      await this._negotiate(generation, hello.ice_servers || []);
      if (!current()) return;
      this.ptt.setConnected(true);
      this.retries = 0;
      this.view.connection("online");
      this.view.linkNotice("");
      this._render();
      await this._syncJoins(hello.joined || []);
      this._holdScreenOn();
    } catch (error) {
      if (!current()) return;
      if (error instanceof SignInEnded) return this._signInEnded(error.reason);
      if (error instanceof ServerError && error.code === "unauthorized") return this._helloRefused(error.message, token);
      console.warn(`vpdesk: connect failed: ${error.message}`);
      this._linkLost();
    }
  }

  async _negotiate(generation, iceServers) {
    const media = new MediaLink({
      iceServers,
      audioParent: document.getElementById("audio-sinks"),
      onState: (state) => this._onMediaState(generation, state),
    });
    this.media = media;
    if (this.microphone) await media.setMicrophone(this.microphone);
    await this._offer(this._slotsWanted());
  }

  /** Offer (or re-offer) with `slots` receive m-lines; record the server's bindings. */
  async _offer(slots) {
    const media = this.media;
    const sdp = await media.offer(slots);
    const reply = await this.signaling.request("offer", { sdp }, 15000);
    await media.answer(reply.sdp);
    for (const binding of reply.bindings || []) this.board.mids.set(binding.channel, binding.mid);
  }

  _slotsWanted() {
    const max = this.limits?.max_receive_slots ?? 64;
    return Math.max(1, Math.min(max, this.board.channels.length));
  }

  /** Bring the server's joins and mutes to what the user chose. `joined`: a resume's. */
  async _syncJoins(joined) {
    const board = this.board;
    for (const { channel } of joined) {
      if (board.has(channel) && !board.listen.has(channel)) await this._request("leave", { channel }).catch(() => {});
    }
    for (const channel of [...board.listen]) await this._join(channel);
    this._render();
  }

  async _join(channel) {
    // Joining a joined channel answers with its slot and floor: the same call serves
    // a resumed session and a fresh one.
    let reply;
    try {
      reply = await this._request("join", { channel });
    } catch (error) {
      if (error instanceof ServerError && error.code === "no_slot") {
        await this._offer(this.media.slots + 1);
        return this._join(channel);
      }
      if (!(error instanceof LinkDown)) this.view.message(`Cannot listen to ${this.board.nameOf(channel)}: ${error.message}`);
      return;
    }
    this.board.mids.set(channel, reply.mid);
    this.board.applyFloor(channel, reply.floor);
    const wantMuted = this.board.muted.has(channel);
    if (Boolean(reply.muted) !== wantMuted) await this._request("mute", { channel, muted: wantMuted }).catch(() => {});
  }

  _request(type, fields, timeoutMs) {
    if (!this.signaling) return Promise.reject(new LinkDown("not connected"));
    return this.signaling.request(type, fields, timeoutMs);
  }

  _onEvent(message) {
    const board = this.board;
    switch (message.type) {
      case "floor_taken":
        board.floorTaken(message.channel, message.holder, message.since);
        break;
      case "floor_idle":
        board.floorIdle(message.channel);
        break;
      case "floor_revoked":
        this._run(this.ptt.onRevoked(message.channel, message.reason));
        break;
      case "channels_changed":
        this._channelsChanged(message.channels || []);
        break;
      default:
        return; // an event this page does not know (a newer server): ignore it
    }
    this._render();
  }

  async _channelsChanged(channels) {
    const before = new Set(this.board.channels.map((c) => c.id));
    const choices = this._choices();
    this.board.setChannels(channels, choices);
    // A channel the user was just added to is heard at once, as on a radio.
    const added = this.board.channels.filter((c) => !before.has(c.id));
    for (const channel of added) this.board.listen.add(channel.id);
    this._saveChoices();
    if (added.length) this.view.message(`Added to ${added.map((c) => c.name).join(", ")}`);
    if (this.media && this._slotsWanted() > this.media.slots) await this._offer(this._slotsWanted()).catch(() => {});
    for (const channel of added) await this._join(channel.id);
    this._render();
  }

  _onClosed({ code, reason }) {
    // The server ended the sign-in: logged out elsewhere, password changed, user deleted.
    if (code === CLOSE_UNAUTHORIZED) return this._signInEnded(reason);
    if (code === CLOSE_RATE_LIMITED) {
      this.view.linkNotice("Too many requests; reconnecting…");
      this.retries = Math.max(this.retries, RATE_LIMITED_RETRY_INDEX);
    }
    this._linkLost();
  }

  _onMediaState(generation, state) {
    // ICE failed (a network change the WebSocket survived): start over with a resume.
    if (generation === this.generation && state === "failed") this._linkLost();
  }

  /** The link is gone (or never came): stop talking, then try again with back-off. */
  _linkLost() {
    const generation = ++this.generation; // replies for the old link are dropped
    this._dropLink(1000, "link lost");
    const delay = RETRY_DELAYS_MS[Math.min(this.retries, RETRY_DELAYS_MS.length - 1)];
    this.retries++;
    this.view.connection("reconnecting");
    this.retryTimer = setTimeout(() => generation === this.generation && this._connect(), delay);
  }

  _reconnectSoon() {
    if (this.user && !this.ptt.connected) {
      this.retries = 0;
      this._connect();
    }
  }

  _dropLink(code, reason) {
    this._run(this.ptt.onConnectionLost());
    if (this.signaling) this.signaling.close(code, reason);
    this.signaling = null;
    this.media?.close();
    this.media = null;
    this.board.mids.clear();
    this.board.floors.clear(); // unknown until the server tells again
    this._render();
  }

  // --- user actions (called by the view) ---------------------------------------------

  talkOn(channel) {
    if (this.ptt.channel != null) return; // not while asking or talking
    this.board.talk = channel;
    this._saveChoices();
    this._render();
  }

  async setListen(channel, on) {
    const board = this.board;
    board.setListening(channel, on);
    this._saveChoices();
    this._render();
    if (!this.ptt.connected) return; // applied on the next connect
    if (on) await this._join(channel);
    else {
      await this._request("leave", { channel }).catch(() => {});
      board.mids.delete(channel);
    }
    this._render();
  }

  async setMute(channel, muted) {
    const board = this.board;
    board.setMuted(channel, muted);
    this._saveChoices();
    this._render(); // the <audio> element is silenced now; the server stops sending next
    if (!this.ptt.connected || !board.mids.has(channel)) return;
    try {
      await this._request("mute", { channel, muted });
    } catch (error) {
      if (!(error instanceof LinkDown)) this.view.message(`Cannot change mute on ${board.nameOf(channel)}: ${error.message}`);
    }
  }

  pttDown(source) {
    this.unblockSound();
    if (!this.microphone && this.ptt.state === TxState.IDLE) {
      this.view.message(this.micProblem?.message || "The microphone is not ready yet.");
      this.tones.play("busy");
      return;
    }
    this._run(this.ptt.press(source));
  }

  pttUp(source) {
    this._run(this.ptt.release(source));
  }

  pttLost() {
    this._run(this.ptt.releaseAll());
  }

  setMode(mode) {
    this._run(this.ptt.setMode(mode === Mode.TOGGLE ? Mode.TOGGLE : Mode.HOLD));
    this.store.set({ mode: this.ptt.mode });
  }

  setVoiceProcessing(on) {
    this.store.set({ voiceProcessing: on });
    this._openMicrophone();
  }

  retryMicrophone() {
    this._openMicrophone();
  }

  unblockSound() {
    this.tones.unlock().catch(() => {});
    this.media?.resumeAudio().catch(() => {});
  }

  // --- effects of the PTT controller -----------------------------------------------

  _run(effects) {
    for (const effect of effects) {
      switch (effect.kind) {
        case "request":
          this._requestFloor(effect.channel);
          break;
        case "release":
          this._request("floor_release", { channel: effect.channel }).catch(() => {});
          break;
        case "mic_on":
          this.media?.transmit(true);
          break;
        case "mic_off":
          this.media?.transmit(false);
          break;
        case "tone":
          this.tones.play(effect.name);
          break;
        case "message":
          this.view.message(effect.text);
          break;
      }
    }
    if (effects.length) this._render();
  }

  async _requestFloor(channel) {
    this.view.message("");
    let reply;
    try {
      reply = await this._request("floor_request", { channel });
    } catch (error) {
      // Too many requests is no busy channel: a short word, no busy tone.
      const throttled = error instanceof ServerError && error.code === "rate_limited";
      const reason = throttled ? "too many requests; wait a moment" : error.message;
      this._run(this.ptt.onFailed(channel, reason, { tone: !throttled }));
      return;
    }
    if (reply.granted) this._run(this.ptt.onGranted(channel, reply.max_ms ?? null));
    else {
      if (reply.holder) this.board.floorTaken(channel, reply.holder, null);
      this._run(this.ptt.onDenied(channel, reply.holder?.name));
    }
  }

  // --- microphone, screen, drawing ---------------------------------------------------

  async _openMicrophone() {
    try {
      const track = await openMicrophone({ voiceProcessing: this.store.get("voiceProcessing") });
      if (!this.user) return track.stop(); // signed out meanwhile
      track.addEventListener("ended", () => {
        if (this.microphone !== track) return;
        this.microphone = null;
        this.micProblem = { message: "The microphone was disconnected. Reconnect it and press Retry." };
        this.pttLost();
        this.view.notice(this.micProblem.message, { retry: true });
      });
      const old = this.microphone;
      this.microphone = track;
      this.micProblem = null;
      if (this.media) await this.media.setMicrophone(track);
      else old?.stop();
      this.view.notice("");
    } catch (problem) {
      this.micProblem = problem;
      const retry = !["insecure", "unsupported"].includes(problem.kind);
      this.view.notice(problem.message, { retry });
    }
    this._render();
  }

  async _holdScreenOn() {
    // A phone that sleeps drops the radio; keep the screen on while signed in.
    if (!("wakeLock" in navigator) || this.wakeLock || document.hidden || !this.user) return;
    try {
      this.wakeLock = await navigator.wakeLock.request("screen");
      this.wakeLock.addEventListener("release", () => (this.wakeLock = null));
    } catch {
      this.wakeLock = null; // refused (battery saver): the radio still works
    }
  }

  _choices() {
    return { listen: this.store.get("listen"), muted: this.store.get("muted"), talk: this.store.get("talk") };
  }

  _saveChoices() {
    this.store.set(this.board.choices());
  }

  _render() {
    const board = this.board;
    this.ptt.target = board.talk; // the next press talks on the channel shown
    this.view.channels(board, this.user);
    this._tick();
    for (const [channel, mid] of board.mids) {
      const element = this.media?.audioFor(mid);
      if (element) element.muted = board.muted.has(channel) || !board.listen.has(channel);
    }
  }

  _tick() {
    if (this.user && this.tokens.dueInBackground()) this._refreshAhead();
    this.view.talk({ board: this.board, me: this.user, ptt: this.ptt, canTalk: this.ptt.connected && this.board.talk != null });
    const blocked = Boolean(this.user) && (!this.tones.unlocked || (this.media?.blockedAudio().length ?? 0) > 0);
    this.view.soundBlocked(blocked);
  }
}
