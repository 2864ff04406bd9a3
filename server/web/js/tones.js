// The PTT tones (talk permit, end of transmission, busy, ...): the same WAV files the
// console plays, fetched from the server once and played through Web Audio so a tone
// starts within a frame of the event that asks for it.

export class TonePlayer {
  constructor(baseUrl = "tones/") {
    this.baseUrl = baseUrl;
    this.context = null;
    this.buffers = new Map(); // name -> Promise<AudioBuffer | null>
    this.volume = 0.8;
    this.played = []; // [{name, at (performance.now())}]: what was played, for tests and benchmarks
  }

  _audioContext() {
    if (!this.context) this.context = new AudioContext({ latencyHint: "interactive" });
    return this.context;
  }

  /** Fetch and decode the named tones ahead of the first press. */
  preload(names) {
    for (const name of names) this._buffer(name);
  }

  _buffer(name) {
    if (!this.buffers.has(name)) {
      const loaded = fetch(`${this.baseUrl}${name}.wav`)
        .then((response) => {
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          return response.arrayBuffer();
        })
        .then((bytes) => this._audioContext().decodeAudioData(bytes))
        .catch((error) => {
          console.warn(`vpdesk: tone ${name} unavailable: ${error.message}`);
          this.buffers.delete(name); // try again next time
          return null;
        });
      this.buffers.set(name, loaded);
    }
    return this.buffers.get(name);
  }

  /** True when the browser lets the page make sound (autoplay policy). */
  get unlocked() {
    return !this.context || this.context.state === "running";
  }

  /** Call from a user gesture: browsers only start audio after one. */
  async unlock() {
    const context = this._audioContext();
    if (context.state !== "running") await context.resume();
  }

  async play(name) {
    const buffer = await this._buffer(name);
    if (!buffer) return false;
    const context = this._audioContext();
    if (context.state === "suspended") await context.resume().catch(() => {});
    const source = context.createBufferSource();
    const gain = context.createGain();
    gain.gain.value = this.volume;
    source.buffer = buffer;
    source.connect(gain).connect(context.destination);
    source.start();
    this.played.push({ name, at: performance.now() });
    if (this.played.length > 50) this.played.shift();
    return true;
  }
}
