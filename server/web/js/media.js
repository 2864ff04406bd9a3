// The browser's side of the session's one RTCPeerConnection (PROTOCOL.md "Session"):
// the first m-line sends the microphone, each further one receives a channel that `join`
// binds to it. The microphone track is attached only while the floor is ours, so the
// page sends no packets at all when it is not talking.

/** Why the microphone cannot be used, as the page tells the user. */
export class MicrophoneProblem extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "MicrophoneProblem";
    this.kind = kind; // insecure | unsupported | denied | absent | in_use | failed
  }
}

export function microphoneProblemFor(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MicrophoneProblem(
        "denied",
        "Microphone access is blocked. Allow the microphone for this site in the browser's " +
          "site settings, then reload the page. You can still listen.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new MicrophoneProblem(
        "absent",
        "No microphone was found. Connect a headset or microphone and press Retry. You can still listen.",
      );
    case "NotReadableError":
    case "AbortError":
      return new MicrophoneProblem(
        "in_use",
        "The microphone cannot be opened: another app may be using it. Close it and press Retry.",
      );
    default:
      return new MicrophoneProblem("failed", `The microphone failed: ${error?.message || "unknown error"}`);
  }
}

/**
 * The microphone as a MediaStreamTrack. `voiceProcessing` turns the browser's echo
 * cancellation, noise suppression and gain control on (a noisy street) or off (a
 * clean headset; the waveform stays as spoken).
 */
export async function openMicrophone({ voiceProcessing = true } = {}) {
  if (!window.isSecureContext) {
    throw new MicrophoneProblem(
      "insecure",
      "This page was not opened over a secure connection (HTTPS), so the browser will not " +
        "let it use the microphone. You can listen, but not talk. Ask your administrator " +
        "for the https:// address of this server.",
    );
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new MicrophoneProblem("unsupported", "This browser cannot record audio; use a current Chrome, Firefox or Safari.");
  }
  const audio = {
    channelCount: 1,
    echoCancellation: voiceProcessing,
    noiseSuppression: voiceProcessing,
    autoGainControl: voiceProcessing,
  };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    return stream.getAudioTracks()[0];
  } catch (error) {
    throw microphoneProblemFor(error);
  }
}

export class MediaLink {
  /**
   * iceServers: from the hello reply. onState(state): the connection state changed.
   * onAudio(mid, element): an <audio> element now plays that receive slot.
   */
  constructor({ iceServers = [], onState = () => {}, audioParent = document.body }) {
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    this.microphone = null;
    this.transmitting = false;
    this.audioByMid = new Map();
    this.audioParent = audioParent;
    this.sendTransceiver = this.pc.addTransceiver("audio", { direction: "sendonly" });
    this.pc.addEventListener("connectionstatechange", () => onState(this.pc.connectionState));
    this.pc.addEventListener("track", (event) => this._play(event.transceiver.mid, event.track));
  }

  get slots() {
    return this.pc.getTransceivers().length - 1;
  }

  /** Add receive slots up to `count` and return the offer to send (first or re-offer). */
  async offer(count) {
    while (this.slots < count) this.pc.addTransceiver("audio", { direction: "recvonly" });
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    return this.pc.localDescription.sdp;
  }

  async answer(sdp) {
    await this.pc.setRemoteDescription({ type: "answer", sdp });
  }

  _play(mid, track) {
    let element = this.audioByMid.get(mid);
    if (!element) {
      element = document.createElement("audio");
      element.autoplay = true;
      element.dataset.mid = mid;
      this.audioParent.appendChild(element);
      this.audioByMid.set(mid, element);
    }
    element.srcObject = new MediaStream([track]);
    element.play().catch(() => {}); // blocked until a gesture: see blockedAudio()
  }

  /** The <audio> elements the autoplay policy has kept silent. */
  blockedAudio() {
    return [...this.audioByMid.values()].filter((element) => element.srcObject && element.paused);
  }

  async resumeAudio() {
    await Promise.all(this.blockedAudio().map((element) => element.play()));
  }

  audioFor(mid) {
    return this.audioByMid.get(mid) || null;
  }

  /** Use `track` as the microphone from now on (sent only while transmitting). */
  async setMicrophone(track) {
    if (this.microphone && this.microphone !== track) this.microphone.stop();
    this.microphone = track;
    if (this.transmitting) await this.sendTransceiver.sender.replaceTrack(track);
  }

  async transmit(on) {
    this.transmitting = on;
    await this.sendTransceiver.sender.replaceTrack(on ? this.microphone : null);
  }

  /** inbound-rtp stats per receive slot: [{mid, packetsReceived, audioLevel, ...}]. */
  async inbound() {
    const out = [];
    for (const transceiver of this.pc.getTransceivers().slice(1)) {
      const report = await transceiver.receiver.getStats();
      report.forEach((entry) => {
        if (entry.type === "inbound-rtp") out.push({ ...entry, mid: transceiver.mid });
      });
    }
    return out;
  }

  close() {
    this.pc.close();
    for (const element of this.audioByMid.values()) {
      element.srcObject = null;
      element.remove();
    }
    this.audioByMid.clear();
    // The microphone outlives the connection: a reconnect reuses it without asking again.
  }
}
