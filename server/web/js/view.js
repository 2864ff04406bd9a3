// Drawing the page from the app's state, and handing the user's actions back as calls.
// The only module that touches the DOM of the radio view.

import { TxState } from "./ptt.js";

const $ = (id) => document.getElementById(id);

const CONNECTION_TEXT = {
  offline: "Offline",
  connecting: "Connecting…",
  online: "Connected",
  reconnecting: "Reconnecting…",
};

export class View {
  /** actions: {talkOn(id), setListen(id, on), setMute(id, on), pttDown(source), pttUp(source), ...} */
  constructor(actions) {
    this.actions = actions;
    this.list = $("channel-list");
    this.rows = new Map(); // channel id -> {li, ...parts}
    this._wireStatic();
  }

  _wireStatic() {
    const a = this.actions;
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      a.signIn($("username").value.trim(), $("password").value);
    });
    $("sign-out").addEventListener("click", () => a.signOut());
    $("notice-retry").addEventListener("click", () => a.retryMicrophone());
    $("sound-unblock").addEventListener("click", () => a.unblockSound());
    for (const radio of document.querySelectorAll('input[name="ptt-mode"]')) {
      radio.addEventListener("change", () => radio.checked && a.setMode(radio.value));
    }
    $("voice-processing").addEventListener("change", (event) => a.setVoiceProcessing(event.target.checked));

    const button = $("ptt-button");
    // Pointer events cover mouse, touch and pen; capture keeps the release coming to the
    // button even when the finger slides off it.
    button.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      button.setPointerCapture(event.pointerId);
      a.pttDown("button");
    });
    const up = () => a.pttUp("button");
    button.addEventListener("pointerup", up);
    button.addEventListener("pointercancel", up);
    button.addEventListener("lostpointercapture", up);
    button.addEventListener("contextmenu", (event) => event.preventDefault()); // long press
    button.addEventListener("keydown", (event) => {
      // Space is handled for the whole page below; Enter works on the focused button.
      if (event.key === "Enter" && !event.repeat) a.pttDown("enter");
    });
    button.addEventListener("keyup", (event) => event.key === "Enter" && a.pttUp("enter"));

    const typing = (target) => target instanceof HTMLInputElement && target.type !== "radio" && target.type !== "checkbox";
    window.addEventListener("keydown", (event) => {
      if (event.code !== "Space" || typing(event.target) || $("radio-view").hidden) return;
      event.preventDefault(); // no page scroll, no click on a focused button
      if (!event.repeat) a.pttDown("space");
    });
    window.addEventListener("keyup", (event) => {
      if (event.code !== "Space" || typing(event.target)) return;
      event.preventDefault();
      a.pttUp("space");
    });
    // A release can be lost when the page loses focus: never leave the microphone on.
    window.addEventListener("blur", () => a.pttLost());
    document.addEventListener("visibilitychange", () => document.hidden && a.pttLost());
  }

  showLogin({ error = "", username = "" } = {}) {
    $("login-view").hidden = false;
    $("radio-view").hidden = true;
    $("account").hidden = true;
    $("login-error").textContent = error;
    if (username) $("username").value = username;
    $("password").value = "";
    $("login-button").disabled = false;
    ($("username").value ? $("password") : $("username")).focus();
  }

  loginBusy(busy) {
    $("login-button").disabled = busy;
    $("login-button").textContent = busy ? "Signing in…" : "Sign in";
  }

  showRadio(user) {
    $("login-view").hidden = true;
    $("radio-view").hidden = false;
    $("account").hidden = false;
    $("user-name").textContent = user ? user.name : "";
  }

  connection(state, detail = "") {
    const pill = $("connection");
    pill.dataset.state = state;
    pill.textContent = detail ? `${CONNECTION_TEXT[state]} ${detail}` : CONNECTION_TEXT[state];
  }

  notice(text, { retry = false } = {}) {
    $("notice").hidden = !text;
    $("notice-text").textContent = text || "";
    $("notice-retry").hidden = !retry;
  }

  /** Why the link is being re-made (e.g. too many requests); "" hides it. */
  linkNotice(text) {
    $("link-notice").hidden = !text;
    $("link-notice-text").textContent = text || "";
  }

  soundBlocked(blocked) {
    $("sound-blocked").hidden = !blocked;
  }

  message(text) {
    $("message").textContent = text || "";
  }

  setPreferences({ mode, voiceProcessing }) {
    for (const radio of document.querySelectorAll('input[name="ptt-mode"]')) radio.checked = radio.value === mode;
    $("voice-processing").checked = voiceProcessing;
  }

  /** Redraw the channel rows from the board (rows are reused, so focus survives). */
  channels(board, me) {
    $("no-channels").hidden = board.channels.length > 0;
    const seen = new Set();
    board.channels.forEach((channel, index) => {
      seen.add(channel.id);
      const row = this.rows.get(channel.id) || this._row(channel.id);
      // Move a row only when it is out of the server's order: moving a node drops focus.
      if (this.list.children[index] !== row.li) this.list.insertBefore(row.li, this.list.children[index] || null);
      const holder = board.holder(channel.id);
      const listening = board.listen.has(channel.id);
      const muted = board.muted.has(channel.id);
      row.name.textContent = channel.name;
      row.meta.textContent = [channel.team, channel.event].filter(Boolean).join(" · ");
      row.li.dataset.floor = holder ? (holder.user_id === me?.id ? "mine" : "taken") : "idle";
      row.li.classList.toggle("is-talk-target", board.talk === channel.id);
      row.speaking.textContent = holder ? (holder.user_id === me?.id ? "You are talking" : `${holder.name} is speaking`) : "";
      row.select.setAttribute("aria-pressed", String(board.talk === channel.id));
      row.listen.setAttribute("aria-pressed", String(listening));
      row.listen.textContent = listening ? "✓ Listen" : "Listen";
      row.mute.setAttribute("aria-pressed", String(muted));
      row.mute.textContent = muted ? "Muted" : "Mute";
      row.mute.disabled = !listening;
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.li.remove();
        this.rows.delete(id);
      }
    }
  }

  _row(id) {
    const li = document.createElement("li");
    li.className = "channel";
    li.dataset.channelId = String(id);
    const select = document.createElement("button");
    select.type = "button";
    select.className = "channel-select";
    select.title = "Talk on this channel";
    const name = document.createElement("span");
    name.className = "channel-name";
    const meta = document.createElement("span");
    meta.className = "channel-meta";
    const speaking = document.createElement("span");
    speaking.className = "channel-speaking";
    select.append(name, meta, speaking);
    const listen = document.createElement("button");
    listen.type = "button";
    listen.className = "channel-listen toggle";
    const mute = document.createElement("button");
    mute.type = "button";
    mute.className = "channel-mute toggle";
    li.append(select, listen, mute);
    select.addEventListener("click", () => this.actions.talkOn(id));
    listen.addEventListener("click", () => this.actions.setListen(id, listen.getAttribute("aria-pressed") !== "true"));
    mute.addEventListener("click", () => this.actions.setMute(id, mute.getAttribute("aria-pressed") !== "true"));
    const row = { li, select, name, meta, speaking, listen, mute };
    this.rows.set(id, row);
    return row;
  }

  /** The talk panel: target channel, the floor banner, the big button. */
  talk({ board, me, ptt, canTalk }) {
    const target = board.talk;
    $("talk-channel").textContent = target == null ? "—" : board.nameOf(target);
    const holder = target == null ? null : board.holder(target);
    const state = ptt.state;
    const banner = $("floor-banner");
    if (state === TxState.TRANSMITTING) {
      banner.dataset.state = "mine";
      banner.textContent = "You are on the air";
    } else if (state === TxState.DENIED) {
      banner.dataset.state = "busy";
      banner.textContent = `${ptt.deniedHolder || "Someone"} is speaking — channel busy`;
    } else if (holder && holder.user_id !== me?.id) {
      banner.dataset.state = "taken";
      banner.textContent = `${holder.name} is speaking`;
    } else {
      banner.dataset.state = "idle";
      banner.textContent = target == null ? "No channel to talk on" : "Channel clear";
    }

    const button = $("ptt-button");
    button.dataset.state = state;
    button.disabled = !canTalk;
    const toggle = ptt.mode === "toggle";
    const labels = {
      [TxState.IDLE]: toggle ? "Tap to talk" : "Hold to talk",
      [TxState.REQUESTING]: "Waiting for the channel…",
      [TxState.CANCELLING]: "Waiting for the channel…",
      [TxState.TRANSMITTING]: toggle ? "On air — tap to stop" : "On air — release to stop",
      [TxState.DENIED]: "Busy",
    };
    $("ptt-label").textContent = labels[state];
    const remaining = ptt.talkRemainingMs();
    $("ptt-timer").textContent = remaining == null ? "" : `${Math.ceil(remaining / 1000)} s left`;
    $("ptt-hint").textContent = toggle
      ? "Tap the button, or press the space bar, to start and again to stop."
      : "Hold the button, or the space bar, while you speak.";
    document.body.classList.toggle("on-air", state === TxState.TRANSMITTING);
  }
}
