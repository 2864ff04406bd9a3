// The channel list as the page shows it: what the user chose (listen, mute, talk) and
// what the server says (who holds each floor). No DOM here; view.js draws it.

export class ChannelBoard {
  constructor() {
    this.channels = []; // [{id, name, team, event}] in the server's order
    this.floors = new Map(); // id -> {holder: {user_id, name}, since} while taken
    this.listen = new Set();
    this.muted = new Set();
    this.talk = null;
    this.mids = new Map(); // id -> mid of the receive slot bound by join
  }

  /** Take the server's list; choices about channels that are gone are dropped. */
  setChannels(channels, { listen, muted, talk }) {
    this.channels = channels.filter((c) => c && Number.isInteger(c.id));
    const ids = new Set(this.channels.map((c) => c.id));
    // Never chosen (first sign-in): listen to every channel, talk on the first.
    this.listen = new Set((listen ?? [...ids]).filter((id) => ids.has(id)));
    this.muted = new Set((muted || []).filter((id) => ids.has(id)));
    this.talk = ids.has(talk) ? talk : (this.channels[0]?.id ?? null);
    for (const id of [...this.floors.keys()]) if (!ids.has(id)) this.floors.delete(id);
    for (const id of [...this.mids.keys()]) if (!ids.has(id)) this.mids.delete(id);
  }

  get(id) {
    return this.channels.find((c) => c.id === id) || null;
  }

  has(id) {
    return this.channels.some((c) => c.id === id);
  }

  nameOf(id) {
    return this.get(id)?.name ?? `channel ${id}`;
  }

  floorTaken(id, holder, since) {
    if (this.has(id) && holder) this.floors.set(id, { holder, since });
  }

  floorIdle(id) {
    this.floors.delete(id);
  }

  /** A join reply's Floor: {"state": "idle"} or {"state": "taken", holder, since}. */
  applyFloor(id, floor) {
    if (floor && floor.state === "taken") this.floorTaken(id, floor.holder, floor.since);
    else this.floorIdle(id);
  }

  holder(id) {
    return this.floors.get(id)?.holder ?? null;
  }

  setListening(id, on) {
    if (on) this.listen.add(id);
    else this.listen.delete(id);
  }

  setMuted(id, on) {
    if (on) this.muted.add(id);
    else this.muted.delete(id);
  }

  /** What the page saves: see Store. */
  choices() {
    return { listen: [...this.listen], muted: [...this.muted], talk: this.talk };
  }
}
