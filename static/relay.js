// The Relay browser client library: one WebSocket to a Relay server, kept alive across
// drops, with the session and the channel subscriptions resumed by themselves.
// An ES module with no dependencies and no build step: `import {RelayClient} from
// "/static/relay.js"`. docs/browser-client.md describes it; docs/protocol.md the frames.

// The shipped classes, for ordering what waits to be sent before a welcome has said
// which classes the server has.
const FALLBACK_CLASSES = {critical: 10, normal: 5, status: 1};
// The server closes with 1008 when it refuses a client by policy (too many connections
// from an address, a missing or bad token): trying again by itself would be refused
// again, so the client waits for the app to call connect().
const CLOSE_POLICY = 1008;
// A socket this client gives up on is closed with a code of the application range, so
// the server's log tells it apart from a browser going away.
const CLOSE_GAVE_UP = 4000;
const SEEN_LIMIT = 5000;

const DEFAULTS = {
  backoffBase: 500,      // ms: the first retry comes within this
  backoffMax: 30000,     // ms: the longest wait between two tries
  // A connection must stay up this long before the backoff starts from the bottom
  // again; otherwise a server that accepts and then drops at once would be hammered.
  stableAfter: 5000,
  connectTimeout: 10000, // ms from opening a socket to its welcome
  // Browsers answer the server's pings without telling the page, so a half-open
  // connection is only noticed by heartbeat frames that stop coming. After a move to a
  // slower heartbeat tier the next frame may come the old interval plus the new one
  // after the last, and a tier change is announced at most once a second, so the page
  // may not know the slowest interval yet: this floor covers the shipped tiers (30 s).
  minSilence: 65000,
  queueLimit: 100,       // messages kept while disconnected
};

/** An error of the client or of the server (then `frame` is the server's error frame). */
export class RelayError extends Error {
  /**
   * @param {string} code the server's error code (`rate_limited`, `forbidden`, ...) or
   *   the client's own (`not_connected`, `queue_full`, `closed`, `disconnected`)
   * @param {string} message
   * @param {object|null} [frame] the server's error frame, when it came from the server
   */
  constructor(code, message, frame = null) {
    super(message);
    this.name = "RelayError";
    this.code = code;
    this.frame = frame;
    /** Seconds until sending is allowed again, for `rate_limited`. */
    this.retryAfter = frame && Number.isFinite(frame.retry_after) ? frame.retry_after : null;
  }
}

// Ids are `<milliseconds>-<sequence>` and sort as numbers; others (`L...`, given out
// while the server's Redis is down) take no part in ordering.
function orderedId(id) {
  const match = /^(\d+)-(\d+)$/.exec(id);
  return match ? [Number(match[1]), Number(match[2])] : null;
}

function isAfter(a, b) {
  const ka = orderedId(a);
  const kb = orderedId(b);
  if (!ka || !kb) return false;
  return ka[0] !== kb[0] ? ka[0] > kb[0] : ka[1] > kb[1];
}

/**
 * A connection to a Relay server that reconnects and resumes by itself.
 *
 * Events (`on(type, fn)`): every server frame type (`welcome`, `message` (history
 * replays included, marked `history: true`), `subscribed`, `unsubscribed`, `join`,
 * `leave`, `presence`, `heartbeat`, `error`, `refreshed`, ...) with the frame; `state`
 * with `"connecting"`, `"open"` or `"closed"` and a detail object; `ratelimit` with the
 * time (ms since the epoch) until which publishing is refused.
 */
export class RelayClient {
  #url;
  #options;
  #token;
  #session;
  #since;
  #socket = null;
  #state = "closed";
  #wantOpen = false;       // connect() was called and neither close() nor a refusal since
  #attempt = 0;
  #retryTimer = null;
  #retryAt = null;         // when the next try is due (ms), while one is waiting
  #connectTimer = null;
  #stableTimer = null;
  #watchdog = null;
  #lastFrameAt = 0;
  #lastError = null;
  #welcome = null;
  #classes = FALLBACK_CLASSES;
  #defaultChannel = null;
  #interval = null;
  #slowestInterval = 0;
  #joined = new Set();      // the channels the server has this connection in
  #wanted = new Set();      // the channels the app subscribed to
  #leaving = new Set();     // unsubscribed by the app; the server may not have heard yet
  #sinceFor = new Map();    // channel -> the `since` the app asked to subscribe with
  #lastIds = new Map();     // channel -> the newest ordered id delivered
  #seen = new Set();        // "channel\nid" of the messages delivered lately
  #pending = new Map();     // channel -> [{kind, resolve, reject}], answered in order
  #connectWaiters = [];
  #queue = [];              // messages waiting for an open connection
  #seq = 0;
  #flushScheduled = false;
  #limitedUntil = 0;
  #resubscribeTimer = null;
  #handlers = new Map();
  #onOnline = () => {
    if (this.#retryTimer !== null) this.#open();
  };

  /**
   * @param {string} url the `ws://` or `wss://` URL of the server's `/ws`
   * @param {object} [options]
   * @param {string} [options.token] a JWT from the app's backend (`?token=`)
   * @param {string} [options.session] a session token from an earlier welcome, to resume
   *   that session (after a page reload, say)
   * @param {string} [options.since] the id of the last message seen in the default
   *   channel, sent with `session` on the first connection (later ones use what this
   *   client has seen)
   * @param {Object<string,string>} [options.cursors] channel -> the id of the last
   *   message seen there, so that those are not delivered again
   * @param {string[]} [options.channels] channels to be in; joined on connecting
   * @param {number} [options.backoffBase] ms, the first retry comes within it (500)
   * @param {number} [options.backoffMax] ms, the longest wait between tries (30000)
   * @param {number} [options.minSilence] ms of silence from an open connection before
   *   it is taken for dead, at least (65000; more if the heartbeat interval needs it)
   * @param {number} [options.queueLimit] messages kept while disconnected (100)
   */
  constructor(url, options = {}) {
    this.#url = String(url);
    this.#options = {...DEFAULTS};
    for (const key of Object.keys(DEFAULTS)) {
      if (Number.isFinite(options[key])) this.#options[key] = options[key];
    }
    this.#token = options.token ?? null;
    this.#session = options.session ?? null;
    this.#since = options.since ?? null;
    for (const [channel, id] of Object.entries(options.cursors ?? {})) {
      if (typeof id === "string") this.#lastIds.set(channel, id);
    }
    for (const channel of options.channels ?? []) this.#wanted.add(String(channel));
  }

  /** `"connecting"`, `"open"` or `"closed"`. */
  get state() { return this.#state; }
  /** The latest welcome frame (null before the first). */
  get welcome() { return this.#welcome; }
  /** This client's public id (from the welcome). */
  get clientId() { return this.#welcome ? this.#welcome.client_id : null; }
  /** Who the server says this client is: the token's `sub`, or else the client id. */
  get user() { return this.#welcome ? (this.#welcome.user ?? this.#welcome.client_id) : null; }
  /** The secret session token, to keep for resuming after a page reload. */
  get session() { return this.#session; }
  /** The channel messages go to without a `channel`, as the welcome told (or null). */
  get defaultChannel() { return this.#defaultChannel; }
  /** The message classes the server accepts, name -> priority. */
  get classes() { return {...this.#classes}; }
  /** The channels the server has this connection in. */
  get channels() { return [...this.#joined]; }
  /** Until when (ms since the epoch) the server refuses messages; 0 when it does not. */
  get retryAt() { return this.#limitedUntil > Date.now() ? this.#limitedUntil : 0; }
  /** Messages waiting for the connection. */
  get queued() { return this.#queue.length; }
  /** When the next connection attempt is due (ms since the epoch), while one waits. */
  get nextAttemptAt() { return this.#retryAt; }

  /** The id of the last message delivered in `channel` (null if none). */
  lastId(channel) {
    return this.#lastIds.get(channel) ?? null;
  }

  /**
   * Listen to an event; returns a function that stops listening.
   * @param {string} type a server frame type, `"state"` or `"ratelimit"`
   * @param {Function} fn
   */
  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  /** Stop listening. */
  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  /**
   * Connect (or, while a retry is waiting, try again now). Resolves to the welcome
   * frame; rejects with a RelayError when the server refuses the client (close 1008,
   * e.g. `unauthorized` or `too_many_connections`) or when close() is called first.
   * @returns {Promise<object>}
   */
  connect() {
    if (this.#state === "open") return Promise.resolve(this.#welcome);
    const waiting = new Promise((resolve, reject) => {
      this.#connectWaiters.push({resolve, reject});
    });
    if (!this.#wantOpen) {
      this.#wantOpen = true;
      globalThis.addEventListener?.("online", this.#onOnline);
    }
    if (this.#state !== "connecting") {
      this.#attempt = 0;
      this.#open();
    }
    return waiting;
  }

  /**
   * Be in `channel` from now on, across reconnects. Resolves to the `subscribed` frame
   * (at once if connected, else once connected); rejects with the server's refusal.
   * @param {string} channel
   * @param {object} [options]
   * @param {string} [options.since] recover what came after this message id
   * @returns {Promise<object>}
   */
  subscribe(channel, {since} = {}) {
    channel = String(channel);
    this.#wanted.add(channel);
    this.#leaving.delete(channel);
    if (since) this.#sinceFor.set(channel, since);
    const answer = this.#expect(channel, "subscribed");
    if (this.#state === "open") this.#sendSubscribe(channel, since);
    return answer;
  }

  /**
   * Leave `channel`. Resolves to the `unsubscribed` frame.
   * @param {string} channel
   * @returns {Promise<object>}
   */
  unsubscribe(channel) {
    channel = String(channel);
    this.#wanted.delete(channel);
    this.#sinceFor.delete(channel);
    this.#leaving.add(channel);
    const answer = this.#expect(channel, "unsubscribed");
    if (this.#state === "open") this.#send({type: "unsubscribe", channel});
    return answer;
  }

  /**
   * Who is in `channel` now. Resolves to the `presence` frame.
   * @param {string} channel
   * @returns {Promise<object>}
   */
  presence(channel) {
    if (this.#state !== "open") {
      return Promise.reject(new RelayError("not_connected", "not connected"));
    }
    const answer = this.#expect(String(channel), "presence");
    this.#send({type: "presence", channel: String(channel)});
    return answer;
  }

  /**
   * Send a message. Messages published together (in one task) or while disconnected
   * wait in a queue and go out by class priority, highest first, as on the server.
   * Throws a RelayError `rate_limited` (with `retryAfter`, seconds) while the server's
   * rate limit is known to refuse messages, `queue_full` when too many wait for the
   * connection, or `not_connected` when the client will not reconnect by itself.
   * @param {string} content
   * @param {object} [options]
   * @param {string} [options.cls] the message class (`"normal"`)
   * @param {string} [options.channel] where it goes (the default channel without it)
   * @returns {boolean} true if it goes out on the open connection, false if it waits
   */
  publish(content, {cls = "normal", channel} = {}) {
    if (!this.#wantOpen && this.#state !== "open") {
      throw new RelayError("not_connected", "not connected: call connect() first");
    }
    const wait = this.#limitedUntil - Date.now();
    if (wait > 0) {
      const retryAfter = Math.ceil(wait / 100) / 10;
      throw new RelayError("rate_limited", `rate limited: try again in ${retryAfter} s`,
        {type: "error", code: "rate_limited", retry_after: retryAfter});
    }
    if (this.#queue.length >= this.#options.queueLimit) {
      throw new RelayError("queue_full", `${this.#queue.length} messages already wait`);
    }
    const frame = {type: String(cls), content: String(content)};
    if (channel != null) frame.channel = String(channel);
    this.#queue.push({frame, seq: ++this.#seq});
    this.#scheduleFlush();
    return this.#state === "open";
  }

  /**
   * Replace the token before it expires: sent at once if connected, and used for every
   * later connection. The server answers `refreshed`, or `error` `unauthorized`.
   * @param {string} token
   */
  refresh(token) {
    this.#token = token;
    if (this.#state === "open") this.#send({type: "refresh", token});
  }

  /** Close the connection and stop reconnecting. */
  close() {
    this.#wantOpen = false;
    globalThis.removeEventListener?.("online", this.#onOnline);
    this.#clearRetry();
    clearTimeout(this.#resubscribeTimer);
    if (this.#socket !== null) this.#drop(this.#socket, 1000, "client closed");
    this.#stopTimers();
    const error = new RelayError("closed", "the client was closed");
    this.#failAll(error, true);
    this.#setState("closed", {code: 1000, reason: "client closed", error: null, retryAt: null});
  }

  // -- the connection -------------------------------------------------------------

  #socketUrl() {
    const url = new URL(this.#url);
    if (this.#session) {
      url.searchParams.set("session", this.#session);
      // `since` names the last message seen in the default channel; the server keeps
      // the other channels' places in the session.
      const since = this.#welcome === null ? this.#since
        : this.#defaultChannel !== null ? this.#lastIds.get(this.#defaultChannel) : null;
      if (since) url.searchParams.set("since", since);
    }
    if (this.#token) url.searchParams.set("token", this.#token);
    return url.href;
  }

  #open() {
    this.#clearRetry();
    if (this.#socket !== null) this.#drop(this.#socket, CLOSE_GAVE_UP, "reconnecting");
    this.#lastError = null;
    this.#setState("connecting", {attempt: this.#attempt});
    let socket;
    try {
      socket = new WebSocket(this.#socketUrl());
    } catch (error) {
      this.#lost({code: null, reason: `cannot connect: ${error.message}`});
      return;
    }
    this.#socket = socket;
    this.#connectTimer = setTimeout(() => {
      if (socket === this.#socket) this.#abandon(socket, "the server did not answer");
    }, this.#options.connectTimeout);
    socket.onmessage = (event) => {
      if (socket !== this.#socket) return;
      this.#lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;  // the server sends JSON only; anything else is not ours to handle
      }
      if (frame && typeof frame === "object") this.#handle(frame);
    };
    socket.onclose = (event) => {
      if (socket !== this.#socket) return;
      this.#socket = null;
      this.#lost({code: event.code, reason: event.reason});
    };
  }

  // Let go of a socket at once: its late events must not touch the client, and a dead
  // peer never completes a closing handshake.
  #drop(socket, code, reason) {
    if (socket === this.#socket) this.#socket = null;
    socket.onmessage = null;
    socket.onclose = null;
    try {
      socket.close(code, reason);
    } catch {
      // already closing
    }
  }

  #abandon(socket, reason) {
    this.#drop(socket, CLOSE_GAVE_UP, "gave up");
    this.#lost({code: null, reason});
  }

  #lost({code, reason}) {
    const wasOpen = this.#state === "open";
    this.#stopTimers();
    this.#joined.clear();
    // Presence answers do not survive a reconnect; subscriptions are asked for again.
    for (const [channel, list] of this.#pending) {
      const keep = list.filter((p) => p.kind !== "presence");
      for (const p of list) {
        if (p.kind === "presence") p.reject(new RelayError("disconnected", "connection lost"));
      }
      if (keep.length) this.#pending.set(channel, keep); else this.#pending.delete(channel);
    }
    const error = this.#lastError;
    const detail = {code, reason: reason || (error && error.message) || "", error, wasOpen};
    if (code === CLOSE_POLICY) {
      this.#wantOpen = false;
      const refusal = new RelayError(error ? error.code : "refused",
        error ? String(error.message) : reason || "refused by the server", error);
      this.#failAll(refusal, false);
      this.#setState("closed", {...detail, retryAt: null});
      return;
    }
    if (!this.#wantOpen) {
      this.#setState("closed", {...detail, retryAt: null});
      return;
    }
    // Equal jitter: half of the exponential step is fixed, half random, so the clients
    // of one restarted server do not all come back in the same instant.
    const {backoffBase, backoffMax} = this.#options;
    const ceiling = Math.min(backoffMax, backoffBase * 2 ** this.#attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#attempt = Math.min(this.#attempt + 1, 16);
    this.#retryAt = Date.now() + delay;
    this.#retryTimer = setTimeout(() => this.#open(), delay);
    this.#setState("closed", {...detail, retryAt: this.#retryAt});
  }

  #clearRetry() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#retryAt = null;
  }

  #stopTimers() {
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#stableTimer);
    clearInterval(this.#watchdog);
    this.#connectTimer = this.#stableTimer = this.#watchdog = null;
  }

  #startWatchdog(socket) {
    clearInterval(this.#watchdog);
    this.#watchdog = setInterval(() => {
      if (socket !== this.#socket || !this.#interval) return;
      const silent = Date.now() - this.#lastFrameAt;
      const slowest = Math.max(this.#interval, this.#slowestInterval);
      const limit = Math.max(this.#options.minSilence, (2 * slowest + 5) * 1000);
      if (silent > limit) this.#abandon(socket, `no heartbeat for ${Math.round(silent / 1000)} s`);
    }, 1000);
  }

  #setState(state, detail) {
    this.#state = state;
    this.#emit("state", state, detail);
  }

  #send(frame) {
    const socket = this.#socket;
    if (socket === null || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  // -- frames ---------------------------------------------------------------------

  #handle(frame) {
    switch (frame.type) {
      case "welcome":
        this.#welcomed(frame);
        return;
      case "message":
        if (this.#delivered(frame)) this.#emit("message", frame);
        return;
      case "heartbeat":
        this.#heard(frame.interval);
        break;
      case "subscribed":
        this.#joined.add(String(frame.channel));
        break;
      case "unsubscribed":
        this.#joined.delete(String(frame.channel));
        this.#leaving.delete(String(frame.channel));
        break;
      case "error":
        this.#refused(frame);
        return;
      default:
        break;
    }
    this.#emit(frame.type, frame);
    if (typeof frame.channel === "string") this.#answer(frame.channel, frame.type, frame);
  }

  #welcomed(frame) {
    const socket = this.#socket;
    clearTimeout(this.#connectTimer);
    this.#welcome = frame;
    if (typeof frame.session === "string") this.#session = frame.session;
    if (frame.classes && typeof frame.classes === "object") this.#classes = frame.classes;
    const channels = Array.isArray(frame.channels) ? frame.channels.map(String) : [];
    const user = String(frame.user ?? frame.client_id);
    // Personal channels are `<namespace>:<user>`; the default channel, when there is
    // one, comes first.
    const personal = (c) => c.endsWith(`:${user}`) && c.indexOf(":") === c.length - user.length - 1;
    this.#defaultChannel = channels.length && !personal(channels[0]) ? channels[0] : null;
    if (this.#since && this.#defaultChannel !== null && !this.#lastIds.has(this.#defaultChannel)) {
      this.#lastIds.set(this.#defaultChannel, this.#since);
    }
    this.#joined = new Set(channels);
    this.#heard(frame.heartbeat && frame.heartbeat.interval);
    this.#stableTimer = setTimeout(() => { this.#attempt = 0; }, this.#options.stableAfter);
    this.#startWatchdog(socket);
    this.#setState("open", {resumed: Boolean(frame.resumed)});
    this.#emit("welcome", frame);
    for (const waiter of this.#connectWaiters.splice(0)) waiter.resolve(frame);
    if (this.#socket !== socket) return;  // a handler closed or reconnected

    // A resumed session is back in its channels; the app's own are joined again where
    // the server no longer has them (a session that expired, or one that was never
    // told: a server that crashed keeps nothing of the connection's last moments).
    for (const channel of channels) {
      if (channel !== this.#defaultChannel && !personal(channel) && !this.#leaving.has(channel)) {
        this.#wanted.add(channel);
      }
    }
    for (const channel of this.#leaving) {
      if (this.#joined.has(channel)) {
        this.#send({type: "unsubscribe", channel});
      } else {
        this.#leaving.delete(channel);
        this.#answer(channel, "unsubscribed", {type: "unsubscribed", channel});
      }
    }
    this.#resubscribe();
    this.#flush();
  }

  #resubscribe() {
    for (const channel of this.#wanted) {
      const waiting = (this.#pending.get(channel) ?? []).some((p) => p.kind === "subscribed");
      // In it already: asked again only for someone waiting on the answer.
      if (!this.#joined.has(channel) || waiting) this.#sendSubscribe(channel);
    }
  }

  #sendSubscribe(channel, asked) {
    const frame = {type: "subscribe", channel};
    // Rejoining recovers from the last message delivered there, so that nothing is
    // missed and nothing comes twice; the app's own `since` counts until then.
    const since = asked || this.#lastIds.get(channel) || this.#sinceFor.get(channel);
    if (since) frame.since = since;
    this.#send(frame);
  }

  // Whether a message is new to this client: replays after a reconnect may overlap
  // what was delivered before (an old cursor in a session that was resumed after a
  // crash, say), and the app gets each message once.
  #delivered(frame) {
    const channel = frame.channel == null ? this.#defaultChannel : String(frame.channel);
    const id = String(frame.id);
    const key = `${channel}\n${id}`;
    if (this.#seen.has(key)) return false;
    const last = this.#lastIds.get(channel);
    if (frame.history && last !== undefined && orderedId(id) && !isAfter(id, last)) return false;
    this.#seen.add(key);
    if (this.#seen.size > SEEN_LIMIT) this.#seen.delete(this.#seen.values().next().value);
    if (orderedId(id) && (last === undefined || isAfter(id, last))) this.#lastIds.set(channel, id);
    return true;
  }

  #heard(interval) {
    const n = Number(interval);
    if (interval == null || !Number.isFinite(n) || n <= 0) {
      this.#interval = null;
      return;
    }
    this.#interval = n;
    this.#slowestInterval = Math.max(this.#slowestInterval, n);
  }

  #refused(frame) {
    this.#lastError = frame;
    if (frame.code === "rate_limited") {
      const seconds = Math.max(0, Number(frame.retry_after) || 0);
      this.#limitedUntil = Math.max(this.#limitedUntil, Date.now() + seconds * 1000);
      this.#emit("ratelimit", this.#limitedUntil, seconds);
    }
    this.#emit("error", frame);
    if (typeof frame.channel !== "string") return;
    const channel = frame.channel;
    const first = (this.#pending.get(channel) ?? [])[0];
    const asked = first ? first.kind : "subscribed";
    if (asked === "subscribed" && this.#wanted.has(channel) && !this.#joined.has(channel)) {
      if (frame.code === "rate_limited") {
        // Subscribing spends the rate limit too: asked again when it allows, and the
        // subscribe() waits for that answer.
        clearTimeout(this.#resubscribeTimer);
        this.#resubscribeTimer = setTimeout(() => {
          if (this.#state === "open") this.#resubscribe();
        }, this.#limitedUntil - Date.now());
        return;
      }
      this.#wanted.delete(channel);  // the server will not have it
    }
    if (first) this.#answer(channel, first.kind, frame, true);
  }

  // -- requests and answers -------------------------------------------------------

  #expect(channel, kind) {
    return new Promise((resolve, reject) => {
      const list = this.#pending.get(channel) ?? [];
      list.push({kind, resolve, reject});
      this.#pending.set(channel, list);
    });
  }

  // Settle every request of `kind` about `channel` with `frame`.
  #answer(channel, kind, frame, failed = false) {
    const list = this.#pending.get(channel);
    if (!list) return;
    const rest = list.filter((p) => p.kind !== kind);
    for (const p of list) {
      if (p.kind !== kind) continue;
      if (failed) {
        p.reject(new RelayError(frame.code, String(frame.message ?? frame.code), frame));
      } else {
        p.resolve(frame);
      }
    }
    if (rest.length) this.#pending.set(channel, rest); else this.#pending.delete(channel);
  }

  #failAll(error, requests) {
    for (const waiter of this.#connectWaiters.splice(0)) waiter.reject(error);
    if (!requests) return;
    for (const list of this.#pending.values()) for (const p of list) p.reject(error);
    this.#pending.clear();
  }

  // -- sending --------------------------------------------------------------------

  #scheduleFlush() {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  // What waits goes out highest priority first and, within a class, in the order
  // published: the order the server's queue gives a client that is behind.
  #flush() {
    if (this.#state !== "open" || this.#queue.length === 0) return;
    const priority = (item) => Number(this.#classes[item.frame.type] ?? 0);
    this.#queue.sort((a, b) => priority(b) - priority(a) || a.seq - b.seq);
    while (this.#queue.length > 0 && this.#send(this.#queue[0].frame)) this.#queue.shift();
  }

  #emit(type, ...args) {
    for (const fn of [...(this.#handlers.get(type) ?? [])]) {
      try {
        fn(...args);
      } catch (error) {
        // One handler's bug must not stop the client or the other handlers; it still
        // surfaces as an uncaught error.
        queueMicrotask(() => { throw error; });
      }
    }
  }
}
