// The Relay browser client: one WebSocket, resumed across drops, no framework.
//
// Every piece of text that comes from the network is written with textContent (never
// innerHTML), and nothing here sets inline styles: the page runs under a strict
// Content-Security-Policy, so all looks come from classes in style.css.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $("conn"),
    state: $("state"),
    reason: $("state-reason"),
    reconnect: $("reconnect"),
    instance: $("instance"),
    clientId: $("client-id"),
    session: $("session-kind"),
    clients: $("clients"),
    heartbeat: $("heartbeat"),
    heartbeatLast: $("heartbeat-last"),
    pulse: $("pulse"),
    log: $("log"),
    jump: $("jump"),
    rl: $("ratelimit"),
    rlDetail: $("rl-detail"),
    rlPrefix: $("rl-prefix"),
    rlCountdown: $("rl-countdown"),
    rlSpoken: $("rl-spoken"),
    error: $("error"),
    errorTitle: $("error-title"),
    errorText: $("error-text"),
    errorDismiss: $("error-dismiss"),
    pending: $("pending"),
    form: $("send"),
    cls: $("cls"),
    text: $("text"),
    burst: $("burst"),
    priorityTest: $("priority-test"),
  };

  const TOKEN_KEY = "relay.session";
  const LAST_ID_KEY = "relay.lastId";
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  // A connection must stay up this long before the backoff starts again from the
  // bottom; otherwise a server that accepts and then drops at once would be hammered.
  const STABLE_AFTER_MS = 5000;
  const CONNECT_TIMEOUT_MS = 10000;
  const WATCHDOG_FLOOR_MS = 65000;
  const LOG_LIMIT = 500;
  const SEEN_LIMIT = 2000;
  const PENDING_LIMIT = 20;
  const BURST_SIZE = 20;
  // Four status messages and a critical fit the shipped rate limit (burst 5), so the
  // critical one is never the message the limit drops.
  const PRIORITY_BATCH = 4;
  const ERROR_VISIBLE_MS = 10000;
  const CLOSE_POLICY = 1008;
  const CLOSE_TEXT = {
    1000: "closed",
    1001: "the server is going away",
    1003: "the server does not accept this data",
    1006: "the connection was lost",
    1008: "refused by policy",
    1009: "a message was too big",
    1011: "server error",
    1013: "the server asked to try again later",
  };
  const CLOSE_ERRORS = {
    1009: "invalid_message",
    1011: "internal_error",
    1013: "slow_consumer",
  };
  const ERROR_TITLE = {
    too_many_connections: "Too many connections.",
    invalid_json: "Message rejected.",
    invalid_message: "Message rejected.",
    slow_consumer: "Connection too slow.",
    internal_error: "Server error.",
  };
  // Fixed colours for the shipped classes; any other class configured on the server
  // gets one of the spare tones, chosen by its name so it keeps its colour.
  const KNOWN_TONES = {critical: "tone-critical", normal: "tone-normal", status: "tone-status"};
  const SPARE_TONES = ["tone-a", "tone-b", "tone-c", "tone-d"];

  // sessionStorage can be unavailable (storage disabled); the client then still works,
  // it just cannot resume after a reload.
  const memory = new Map();
  const store = {
    get(key) {
      try {
        return sessionStorage.getItem(key);
      } catch {
        return memory.has(key) ? memory.get(key) : null;
      }
    },
    set(key, value) {
      try {
        sessionStorage.setItem(key, value);
      } catch {
        memory.set(key, value);
      }
    },
    remove(key) {
      try {
        sessionStorage.removeItem(key);
      } catch {
        memory.delete(key);
      }
    },
  };

  let ws = null;
  let state = "connecting";
  let everWelcomed = false;
  let attempt = 0;
  let retryAt = 0;
  let retryTimer = null;
  let retryTicker = null;
  let connectTimer = null;
  let stableTimer = null;
  let watchdog = null;
  let lastFrameAt = 0;
  let lastError = null;
  let clientId = null;
  let interval = null;
  let largestInterval = 0;
  let beats = 0;
  let maxMessageBytes = null;
  const seen = new Set();
  const pending = [];

  // -- connection -----------------------------------------------------------------

  function socketUrl() {
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const token = store.get(TOKEN_KEY);
    if (token) {
      url.searchParams.set("session", token);
      const last = store.get(LAST_ID_KEY);
      if (last) url.searchParams.set("since", last);
    }
    return url;
  }

  function connect() {
    clearRetry();
    if (ws !== null) drop(ws);
    lastError = null;
    setState(everWelcomed ? "reconnecting" : "connecting", everWelcomed ? "connecting…" : "");
    let socket;
    try {
      socket = new WebSocket(socketUrl());
    } catch (error) {
      scheduleReconnect(`cannot open a connection: ${error.message}`);
      return;
    }
    ws = socket;
    connectTimer = setTimeout(() => {
      if (socket === ws && socket.readyState === WebSocket.CONNECTING) {
        abandon(socket, "the server did not answer");
      }
    }, CONNECT_TIMEOUT_MS);
    socket.onmessage = (event) => {
      if (socket !== ws) return;
      lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;  // not ours to show; the server only sends JSON
      }
      if (frame && typeof frame === "object") handleFrame(frame);
    };
    socket.onclose = (event) => {
      if (socket !== ws) return;
      ws = null;
      stopConnectionTimers();
      closed(event.code, event.reason);
    };
  }

  // Let go of a socket at once, without waiting for a closing handshake that may never
  // come (the peer is gone) and without its late events touching the page.
  function drop(socket) {
    if (socket === ws) ws = null;
    stopConnectionTimers();
    socket.onclose = null;
    socket.onmessage = null;
    try {
      socket.close(4000, "client gave up");
    } catch {
      // already closing
    }
  }

  // A socket that is stuck: no handshake, or silent past its heartbeats.
  function abandon(socket, why) {
    if (socket !== ws) return;
    drop(socket);
    scheduleReconnect(why);
  }

  function closed(code, reason) {
    const why = describeClose(code, reason);
    if (code === CLOSE_POLICY) {
      setState("refused", why);
      systemLine(`Refused: ${why}. Press Reconnect to try again.`, "bad");
      return;
    }
    if (everWelcomed && state === "open") systemLine(`Disconnected: ${why}.`, "warn");
    scheduleReconnect(why);
  }

  function describeClose(code, reason) {
    // The server sends an error frame just before closing for a reason; an older error
    // (a rejected message, say) is not why the connection ended.
    const expected = CLOSE_ERRORS[code];
    if (lastError && lastError.message && (code === CLOSE_POLICY ||
        (expected !== undefined && expected === lastError.code))) {
      return String(lastError.message);
    }
    if (reason) return reason;
    return CLOSE_TEXT[code] || `closed with code ${code}`;
  }

  function scheduleReconnect(why) {
    clearRetry();
    // Equal jitter: half of the exponential step is fixed, half random, so a whole
    // room of clients dropped by one restart does not come back in lockstep.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    attempt = Math.min(attempt + 1, 16);
    retryAt = Date.now() + delay;
    retryTimer = setTimeout(connect, delay);
    const show = () => {
      const left = Math.max(0, (retryAt - Date.now()) / 1000);
      setState("reconnecting", `${why} – retrying in ${left.toFixed(1)} s`);
    };
    show();
    retryTicker = setInterval(show, 200);
  }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(retryTicker);
    retryTimer = retryTicker = null;
  }

  function stopConnectionTimers() {
    clearTimeout(connectTimer);
    clearTimeout(stableTimer);
    clearInterval(watchdog);
    connectTimer = stableTimer = watchdog = null;
  }

  // The browser answers the server's pings but tells the page nothing about them, so
  // a half-open connection is noticed by heartbeat frames that stop coming. When the
  // server moves to a slower tier, the next frame can come the old interval plus the new
  // one after the last, and only that frame tells the new interval: hence the floor,
  // which covers the shipped tiers (up to 30 s), and the largest interval seen so far.
  function startWatchdog(socket) {
    clearInterval(watchdog);
    watchdog = setInterval(() => {
      if (socket !== ws || !interval) return;
      const silentFor = Date.now() - lastFrameAt;
      const slowest = Math.max(interval, largestInterval);
      const limit = Math.max(WATCHDOG_FLOOR_MS, (2 * slowest + 5) * 1000);
      if (silentFor > limit) {
        abandon(socket, `no heartbeat for ${Math.round(silentFor / 1000)} s`);
      }
    }, 1000);
  }

  function setState(next, why) {
    state = next;
    ui.conn.dataset.state = next;
    document.body.dataset.state = next;
    ui.state.textContent = next;
    ui.reason.textContent = why || "";
    // While a retry is merely waiting its turn, the user may skip the wait.
    ui.reconnect.hidden = !(next === "refused" || retryTimer !== null);
    ui.reconnect.textContent = next === "refused" ? "Reconnect" : "Reconnect now";
    document.title = next === "open" ? "Relay" : `Relay (${next})`;
  }

  ui.reconnect.addEventListener("click", () => {
    if (state !== "refused" && retryTimer === null) return;
    attempt = 0;
    connect();
  });

  window.addEventListener("online", () => {
    if (state === "reconnecting" && retryTimer !== null) connect();
  });

  // -- frames ---------------------------------------------------------------------

  function handleFrame(frame) {
    switch (frame.type) {
      case "welcome":
        welcome(frame);
        break;
      case "message":
        message(frame);
        break;
      case "heartbeat":
        heartbeat(frame);
        break;
      case "error":
        error(frame);
        break;
      default:
        break;  // newer servers may add frame types; ignoring them is safe
    }
  }

  function welcome(frame) {
    const socket = ws;
    const hadSession = store.get(TOKEN_KEY) !== null;
    clearTimeout(connectTimer);
    if (typeof frame.session === "string") store.set(TOKEN_KEY, frame.session);
    if (!frame.resumed) {
      // A fresh session: the old cursor belongs to a session the server forgot.
      store.remove(LAST_ID_KEY);
    }
    clientId = String(frame.client_id);
    ui.instance.textContent = String(frame.instance ?? "–");
    ui.clientId.textContent = clientId;
    ui.session.textContent = frame.resumed ? "resumed" : "new";
    ui.session.dataset.resumed = frame.resumed ? "true" : "false";
    showInterval(frame.heartbeat && frame.heartbeat.interval);
    if (frame.classes && typeof frame.classes === "object") buildClasses(frame.classes);
    if (ui.error.dataset.code === "too_many_connections") ui.error.hidden = true;
    const again = everWelcomed || hadSession;
    everWelcomed = true;
    setState("open", "");
    if (!again) {
      systemLine(`Connected to ${frame.instance} as ${clientId}.`);
    } else if (frame.resumed) {
      systemLine(`Reconnected to ${frame.instance}; session resumed.`, "good");
    } else {
      systemLine(`Reconnected to ${frame.instance}; the old session had expired, ` +
        `so this is a new one (${clientId}).`, "warn");
    }
    stableTimer = setTimeout(() => { attempt = 0; }, STABLE_AFTER_MS);
    startWatchdog(socket);
    flushPending();
  }

  function message(frame) {
    const id = String(frame.id);
    // A replay can overlap what is already on screen (a session that could not be
    // resumed gets the recent history again); show each message once.
    if (seen.has(id)) return;
    seen.add(id);
    if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value);
    const last = store.get(LAST_ID_KEY);
    if (!last || isAfter(id, last)) store.set(LAST_ID_KEY, id);
    renderMessage(frame);
  }

  // Ids are `<milliseconds>-<sequence>`; compare them as numbers, not strings.
  function isAfter(a, b) {
    const ka = /^(\d+)-(\d+)$/.exec(a);
    const kb = /^(\d+)-(\d+)$/.exec(b);
    if (!ka || !kb) return true;
    const [ma, sa, mb, sb] = [ka[1], ka[2], kb[1], kb[2]].map(Number);
    return ma !== mb ? ma > mb : sa > sb;
  }

  function heartbeat(frame) {
    showInterval(frame.interval);
    if (Number.isFinite(frame.clients)) ui.clients.textContent = String(frame.clients);
    beats += 1;
    ui.pulse.dataset.beats = String(beats);
    ui.heartbeatLast.textContent = `· last ${clock(frame.ts)}`;
    // Restart the CSS animation: drop the class, force a style flush, add it again.
    ui.pulse.classList.remove("beat");
    void ui.pulse.offsetWidth;
    ui.pulse.classList.add("beat");
  }

  function showInterval(value) {
    const n = Number(value);
    if (value === null || value === undefined || !Number.isFinite(n) || n <= 0) {
      interval = null;
      ui.heartbeat.textContent = "off";
      return;
    }
    interval = n;
    largestInterval = Math.max(largestInterval, n);
    ui.heartbeat.textContent = `every ${n.toLocaleString()} s`;
  }

  function error(frame) {
    lastError = frame;
    if (frame.code === "rate_limited") {
      rateLimited(frame);
      return;
    }
    if (typeof frame.max_message_size === "number") maxMessageBytes = frame.max_message_size;
    let text = String(frame.message ?? "");
    if (frame.code === "slow_consumer") {
      text += ". Reconnecting; missed messages will be replayed.";
    }
    showError(frame.code, ERROR_TITLE[frame.code] || `Error (${frame.code}).`, text);
  }

  // -- messages -------------------------------------------------------------------

  function toneFor(cls) {
    if (Object.hasOwn(KNOWN_TONES, cls)) return KNOWN_TONES[cls];
    let h = 0;
    for (const ch of cls) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return SPARE_TONES[h % SPARE_TONES.length];
  }

  function clock(ts) {
    const when = Number.isFinite(ts) ? new Date(ts * 1000) : new Date();
    return when.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  }

  function renderMessage(frame) {
    const cls = String(frame.class ?? "");
    const from = String(frame.from ?? "");
    const mine = from === clientId;
    const item = document.createElement("li");
    item.className = `msg ${toneFor(cls)}`;
    if (frame.history) item.classList.add("history");
    if (mine) item.classList.add("mine");
    item.dataset.testid = "message";
    item.dataset.id = String(frame.id);
    item.dataset.class = cls;
    item.dataset.from = from;
    if (frame.history) item.dataset.history = "true";

    const meta = document.createElement("div");
    meta.className = "meta";
    const sender = document.createElement("span");
    sender.className = "from";
    sender.textContent = mine ? `${from} (you)` : from;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = cls;
    const time = document.createElement("time");
    if (Number.isFinite(frame.ts)) time.dateTime = new Date(frame.ts * 1000).toISOString();
    time.textContent = clock(frame.ts);
    meta.append(sender, " ", badge, " ", time);
    if (frame.history) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.title = "replayed from the server's history";
      tag.textContent = "history";
      meta.append(" ", tag);
    }
    const content = document.createElement("p");
    content.className = "content";
    content.textContent = String(frame.content ?? "");  // text only, never markup
    item.append(meta, content);
    appendToLog(item, mine);
  }

  function systemLine(text, kind) {
    const item = document.createElement("li");
    item.className = `system${kind ? ` ${kind}` : ""}`;
    item.dataset.testid = "system";
    const time = document.createElement("time");
    time.textContent = clock();
    item.append(time, " ", text);
    appendToLog(item, false);
  }

  function nearBottom() {
    const log = ui.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  }

  // Follow the newest message unless the reader has scrolled up to read older ones;
  // then offer a button back down instead of yanking the view away.
  let following = true;

  function appendToLog(item, force) {
    ui.log.append(item);
    while (ui.log.childElementCount > LOG_LIMIT) ui.log.firstElementChild.remove();
    if (force || following) {
      scrollToNewest();
    } else {
      ui.jump.hidden = false;
    }
  }

  function scrollToNewest() {
    ui.log.scrollTop = ui.log.scrollHeight;
    following = true;
    ui.jump.hidden = true;
  }

  ui.jump.addEventListener("click", () => {
    scrollToNewest();
    ui.log.focus();
  });
  ui.log.addEventListener("scroll", () => {
    following = nearBottom();
    if (following) ui.jump.hidden = true;
  });
  // A notice appearing above the send box shrinks the log; keep the newest in view.
  new ResizeObserver(() => {
    if (following) ui.log.scrollTop = ui.log.scrollHeight;
  }).observe(ui.log);

  // -- notices --------------------------------------------------------------------

  const rate = {until: 0, dropped: 0, detail: "", timer: null, hideTimer: null};

  function rateLimited(frame) {
    const waitMs = Math.max(0, Number(frame.retry_after) || 0) * 1000;
    if (ui.rl.hidden) rate.dropped = 0;
    rate.dropped += 1;
    rate.until = Math.max(rate.until, Date.now() + waitMs);
    rate.detail = String(frame.message ?? "too many messages");
    const n = rate.dropped;
    ui.rlDetail.textContent = `${n} message${n === 1 ? " was" : "s were"} not sent: ${rate.detail}.`;
    ui.rl.hidden = false;
    ui.rl.dataset.dropped = String(n);
    clearTimeout(rate.hideTimer);
    if (rate.timer === null) ui.rlSpoken.textContent = "Rate limited; wait a moment before sending.";
    tickRate();
  }

  function tickRate() {
    clearTimeout(rate.timer);
    const left = rate.until - Date.now();
    if (left > 0) {
      ui.rl.dataset.waiting = "true";
      ui.rlPrefix.textContent = "You can send again in";
      // Rounded up, so a wait still running never reads "0.0 s".
      ui.rlCountdown.textContent = `${(Math.ceil(left / 100) / 10).toFixed(1)} s`;
      rate.timer = setTimeout(tickRate, Math.min(100, left));
      return;
    }
    rate.timer = null;
    ui.rl.dataset.waiting = "false";
    ui.rlPrefix.textContent = "You can send again";
    ui.rlCountdown.textContent = "now";
    ui.rlSpoken.textContent = "You can send again.";
    rate.hideTimer = setTimeout(() => { ui.rl.hidden = true; }, 3000);
  }

  let errorTimer = null;

  function showError(code, title, text) {
    ui.error.dataset.code = String(code);
    ui.errorTitle.textContent = title;
    ui.errorText.textContent = text;
    ui.error.hidden = false;
    clearTimeout(errorTimer);
    // A refusal stays until the user acts on it; other errors fade on their own.
    if (code !== "too_many_connections") {
      errorTimer = setTimeout(() => { ui.error.hidden = true; }, ERROR_VISIBLE_MS);
    }
  }

  ui.errorDismiss.addEventListener("click", () => {
    ui.error.hidden = true;
    ui.text.focus();
  });

  function showPending() {
    const n = pending.length;
    ui.pending.hidden = n === 0;
    ui.pending.textContent = n === 0 ? "" :
      `${n} message${n === 1 ? "" : "s"} waiting for the connection; ` +
      `${n === 1 ? "it" : "they"} will be sent when it is back.`;
  }

  // -- sending --------------------------------------------------------------------

  function buildClasses(classes) {
    const entries = Object.entries(classes)
      .filter(([, priority]) => Number.isFinite(Number(priority)))
      .sort((a, b) => Number(b[1]) - Number(a[1]));
    if (entries.length === 0) return;
    const chosen = ui.cls.value;
    ui.cls.replaceChildren(...entries.map(([name, priority]) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      option.title = `priority ${priority}`;
      return option;
    }));
    const names = entries.map(([name]) => name);
    if (names.includes(chosen)) {
      ui.cls.value = chosen;
    } else if (names.includes("normal")) {
      ui.cls.value = "normal";
    }
  }

  function classes() {
    return Array.from(ui.cls.options, (option) => option.value);
  }

  function tooBig(frame) {
    return maxMessageBytes !== null && new TextEncoder().encode(frame).length > maxMessageBytes;
  }

  // Returns whether the frame went out; the caller decides what to do otherwise.
  function transmit(cls, content) {
    if (ws === null || state !== "open" || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify({type: cls, content}));
    return true;
  }

  function flushPending() {
    while (pending.length > 0 && transmit(pending[0].cls, pending[0].content)) pending.shift();
    showPending();
  }

  function submit() {
    const content = ui.text.value;
    if (content.trim() === "") return;
    const cls = ui.cls.value;
    if (tooBig(JSON.stringify({type: cls, content}))) {
      showError("too_big", "Message too long.",
        `The server accepts at most ${maxMessageBytes} bytes per message.`);
      return;
    }
    if (!transmit(cls, content)) {
      if (state === "refused") {
        showError("not_connected", "Not connected.", "Press Reconnect first; your text is kept.");
        return;
      }
      if (pending.length >= PENDING_LIMIT) {
        showError("not_connected", "Not connected.",
          `${PENDING_LIMIT} messages are already waiting; your text is kept.`);
        return;
      }
      pending.push({cls, content});
      showPending();
    }
    ui.text.value = "";
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });

  ui.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });

  function needConnection() {
    if (state === "open") return true;
    showError("not_connected", "Not connected.", "The test helpers need an open connection.");
    return false;
  }

  ui.burst.addEventListener("click", () => {
    if (!needConnection()) return;
    const cls = ui.cls.value;
    for (let i = 1; i <= BURST_SIZE; i++) transmit(cls, `burst ${i}/${BURST_SIZE}`);
  });

  ui.priorityTest.addEventListener("click", () => {
    if (!needConnection()) return;
    const names = classes();
    const low = names.includes("status") ? "status" : names[names.length - 1];
    const high = names.includes("critical") ? "critical" : names[0];
    for (let i = 1; i <= PRIORITY_BATCH; i++) {
      transmit(low, `priority test: ${low} ${i}/${PRIORITY_BATCH}`);
    }
    transmit(high, `priority test: ${high} (sent last)`);
  });

  connect();
})();
