// Entry point of the field user's page (served at / by every server node).

import { App } from "./app.js";

const app = new App();

// For diagnosing a field problem from the browser console, and for the browser tests:
// the live peer connection and the tones played so far.
window.vpdeskDebug = {
  app,
  get pc() {
    return app.media?.pc ?? null;
  },
  inbound: () => app.media?.inbound() ?? Promise.resolve([]),
  tonesPlayed: () => app.tones.played.map((tone) => tone.name),
};

app.start();
