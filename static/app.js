// The Relay browser client: one WebSocket, resumed across drops, no framework.
//
// Every piece of text that comes from the network is written with textContent (never
// innerHTML), and nothing here sets inline styles: the page runs under a strict
// Content-Security-Policy, so all looks come from classes in style.css.
//
// Conversations: the default channel, the rooms the client joined, and direct messages.
// A direct message to someone is a message to their personal channel (`user:<them>`);
// one to us arrives on ours (`user:<us>`), so DMs are grouped by the other person.
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
    sidebar: $("sidebar"),
    sidebarOpen: $("sidebar-open"),
    sidebarClose: $("sidebar-close"),
    unreadTotal: $("unread-total"),
    channelList: $("channel-list"),
    dmList: $("dm-list"),
    dmHint: $("dm-hint"),
    join: $("join"),
    joinName: $("join-name"),
    joinError: $("join-error"),
    chanName: $("chan-name"),
    chanInfo: $("chan-info"),
    peopleOpen: $("people-open"),
    peopleOpenCount: $("people-open-count"),
    rejoin: $("rejoin"),
    leave: $("leave"),
    people: $("people"),
    peopleClose: $("people-close"),
    peopleCount: $("people-count"),
    peopleList: $("people-list"),
    backdrop: $("backdrop"),
  };

  const TOKEN_KEY = "relay.session";
  const LAST_ID_KEY = "relay.lastId";
  // The tab's rooms, its direct-message conversations and the one on screen, so that a
  // reload finds them again (the server keeps no history of personal channels).
  const VIEW_KEY = "relay.view";
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
  const DM_KEEP = 100;  // messages per DM conversation kept across a reload
  const JOIN_TIMEOUT_MS = 10000;
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
    invalid_channel: "No such channel.",
    too_many_channels: "Too many channels.",
    not_subscribed: "Not in this room.",
    forbidden: "Not allowed.",
  };
  // Fixed colours for the shipped classes; any other class configured on the server
  // gets one of the spare tones, chosen by its name so it keeps its colour.
  const KNOWN_TONES = {critical: "tone-critical", normal: "tone-normal", status: "tone-status"};
  const SPARE_TONES = ["tone-a", "tone-b", "tone-c", "tone-d"];
  const AVATAR_TONES = 8;
  const ROOM_PREFIX = "room:";
  // What the server accepts as a channel name (docs/protocol.md).
  const CHANNEL_NAME = /^[A-Za-z0-9_.:@-]{1,128}$/;

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
      connectionLost();
      closed(event.code, event.reason);
    };
  }

  // Let go of a socket at once, without waiting for a closing handshake that may never
  // come (the peer is gone) and without its late events touching the page.
  function drop(socket) {
    if (socket === ws) ws = null;
    stopConnectionTimers();
    connectionLost();
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
    updateTitle();
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
      case "subscribed":
        subscribed(frame);
        break;
      case "unsubscribed":
        unsubscribed(frame);
        break;
      case "join":
      case "leave":
        joinOrLeave(frame);
        break;
      case "presence":
        presenceList(frame);
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
    channelsFromWelcome(frame);
    flushPending();
  }

  function message(frame) {
    const id = String(frame.id);
    const conv = conversationOf(frame);
    // A replay can overlap what is already on screen (a session that could not be
    // resumed gets the recent history again); show each message once. Ids are per
    // channel (two channels' streams can hand out the same id), so the key is both.
    if (!remember(conv, id)) return;
    // `?since=` names where the page stopped reading the default channel; the server
    // keeps the other channels' cursors in the session.
    if (conv === defaultConv) {
      const last = store.get(LAST_ID_KEY);
      if (!last || isAfter(id, last)) store.set(LAST_ID_KEY, id);
    } else if (conv.kind === "channel") {
      if (!conv.lastId || isAfter(id, conv.lastId)) conv.lastId = id;
      saveView();
    }
    if (!frame.history) conv.quiet = false;
    addMessage(conv, frame, !(frame.history && conv.quiet));
    if (conv.kind === "dm") saveView();
  }

  // Whether `id` is new in `conv`; from now on it is not.
  function remember(conv, id) {
    const key = `${conv.key}\n${id}`;
    if (seen.has(key)) return false;
    seen.add(key);
    if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value);
    return true;
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
    if (channelError(frame)) return;
    if (frame.code === "rate_limited") {
      rateLimited(frame);
      return;
    }
    if (typeof frame.max_message_size === "number") maxMessageBytes = frame.max_message_size;
    let text = String(frame.message ?? "");
    if (frame.code === "slow_consumer") {
      text += ". Reconnecting; missed messages will be replayed.";
    }
    if (typeof frame.channel === "string") text += ` (${channelLabel(frame.channel)})`;
    showError(frame.code, ERROR_TITLE[frame.code] || `Error (${frame.code}).`, text);
  }

  // -- conversations --------------------------------------------------------------

  // Who we are and which channels are ours, from the welcome.
  let me = null;
  let defaultChannel = null;
  const personal = new Set();
  let personalNamespace = "user";

  // key -> conversation. Keys: DEFAULT_KEY, a channel's name, or "dm:" + the other user.
  const DEFAULT_KEY = "default";
  const conversations = new Map();
  let selectedKey = DEFAULT_KEY;
  // Channels this page asked to subscribe to and has no answer for yet.
  const joining = new Map();  // channel -> {byUser, timer}
  // Channels whose presence this page asked for (a `forbidden` answer: no presence there).
  const presenceAsked = new Set();
  let lastSent = null;  // what the page sent last: "message" or "subscribe:<channel>"
  let localSeq = 0;

  function newConversation(key, kind, props) {
    const conv = {
      key,
      kind,            // "default" | "channel" | "dm"
      channel: null,   // the channel it reads (none for a DM: those arrive on ours)
      peer: null,      // a DM's other user
      state: "joined", // channels: "joined" | "joining" | "leaving" | "out"
      nodes: [],       // the rendered log entries, shown while it is selected
      frames: [],      // a DM's messages, kept for a reload
      unread: 0,
      quiet: false,    // history frames now are old context, not news: no unread count
      lastId: null,
      members: null,   // presence: client_id -> {user, count}; null: not known (yet)
      hasPresence: null,
      following: true,
      scrollTop: 0,
      item: null,      // its entry in the sidebar
      ...props,
    };
    conversations.set(key, conv);
    conv.item = sidebarEntry(conv);
    return conv;
  }

  const defaultConv = newConversation(DEFAULT_KEY, "default", {});

  function ensureChannel(channel) {
    if (channel === defaultChannel) return defaultConv;
    let conv = conversations.get(channel);
    if (!conv) {
      conv = newConversation(channel, "channel", {channel, state: "joining"});
      placeInSidebar(conv);
      saveView();
    }
    return conv;
  }

  function ensureDm(peer) {
    const key = `dm:${peer}`;
    let conv = conversations.get(key);
    if (!conv) {
      conv = newConversation(key, "dm", {peer});
      placeInSidebar(conv);
      saveView();
    }
    return conv;
  }

  function isPersonal(channel, user) {
    return user !== null && channel.endsWith(`:${user}`) &&
      channel.indexOf(":") === channel.length - user.length - 1;
  }

  // A message belongs to its channel's conversation; one on our personal channel is a
  // DM from its sender, and a DM we sent is shown in the conversation with its recipient.
  function conversationOf(frame) {
    const channel = frame.channel == null ? defaultChannel : String(frame.channel);
    if (channel !== null && personal.has(channel)) {
      return ensureDm(String(frame.user ?? frame.from ?? "server"));
    }
    if (channel === null || channel === defaultChannel) return defaultConv;
    return ensureChannel(channel);
  }

  function channelsFromWelcome(frame) {
    me = String(frame.user ?? clientId);
    const channels = Array.isArray(frame.channels) ? frame.channels.map(String) : null;
    personal.clear();
    if (channels === null) {  // a server without channels: one channel, no rooms
      defaultChannel = null;
      showConversation();
      return;
    }
    for (const channel of channels) {
      if (isPersonal(channel, me)) personal.add(channel);
    }
    const mine = [...personal].map((channel) => channel.slice(0, channel.indexOf(":")));
    personalNamespace = mine.includes("user") ? "user" : (mine[0] ?? "user");
    const first = channels.find((channel) => !personal.has(channel));
    defaultChannel = first !== undefined && channels.indexOf(first) === 0 ? first : null;
    defaultConv.channel = defaultChannel;
    defaultConv.quiet = !frame.resumed;
    updateEntry(defaultConv);

    const inside = new Set(channels);
    for (const channel of channels) {
      if (channel === defaultChannel || personal.has(channel)) continue;
      const conv = ensureChannel(channel);
      conv.quiet = !frame.resumed;
      if (conv.state === "leaving") {
        send({type: "unsubscribe", channel});  // the drop may have swallowed it
        continue;
      }
      conv.state = "joined";
      updateEntry(conv);
      if (conv.hasPresence !== false) askPresence(channel);
    }
    // Rooms the page was in that the server does not list (an expired session, a
    // reload after one): join them again, recovering from the last message seen.
    for (const conv of [...conversations.values()]) {
      if (conv.kind !== "channel" || inside.has(conv.channel)) continue;
      if (conv.state === "leaving") {
        removeConversation(conv);
        continue;
      }
      subscribe(conv.channel, false, conv.lastId);
    }
    saveView();
    showConversation();
  }

  function subscribe(channel, byUser, since) {
    const conv = conversations.get(channel);
    if (conv && conv.kind === "channel" && conv.state !== "joined") {
      conv.state = "joining";
      updateEntry(conv);
    }
    const frame = {type: "subscribe", channel};
    if (since) frame.since = since;
    if (!send(frame)) return false;
    lastSent = `subscribe:${channel}`;
    const previous = joining.get(channel);
    if (previous) clearTimeout(previous.timer);
    const timer = setTimeout(() => joinFailed(channel, null), JOIN_TIMEOUT_MS);
    joining.set(channel, {byUser: byUser || Boolean(previous && previous.byUser), timer});
    if (byUser) showJoinError(null);
    return true;
  }

  function subscribed(frame) {
    const channel = String(frame.channel);
    const asked = joining.get(channel);
    if (asked) clearTimeout(asked.timer);
    joining.delete(channel);
    if (channel === defaultChannel || personal.has(channel)) return;
    const conv = ensureChannel(channel);
    conv.state = "joined";
    conv.hasPresence = Array.isArray(frame.presence);
    if (conv.hasPresence) setMembers(conv, frame.presence);
    // Without `since` the history that follows is the room's latest messages: context,
    // not news. With it, it is what the page missed, and counts as unread.
    conv.quiet = !("recovered" in frame);
    if (frame.recovered === false) {
      noteIn(conv, "Some messages were missed here: the server's history does not reach " +
        "back far enough.", "warn");
    }
    updateEntry(conv);
    saveView();
    if (asked && asked.byUser) {
      ui.joinName.value = "";
      showJoinError(null);
      closeDrawer(false);
      select(conv.key, {focusText: true, refresh: false});
    } else if (conv.key === selectedKey) {
      showConversation();
    }
  }

  function unsubscribed(frame) {
    const conv = conversations.get(String(frame.channel));
    if (conv && conv.kind === "channel" && conv.state === "leaving") removeConversation(conv);
  }

  // The answer to a subscribe that went wrong (`frame` null: no answer at all).
  function joinFailed(channel, frame) {
    const asked = joining.get(channel);
    if (!asked) return;
    clearTimeout(asked.timer);
    joining.delete(channel);
    const conv = conversations.get(channel);
    const why = frame ? String(frame.message ?? frame.code) : "the server did not answer";
    if (asked.byUser) {
      showJoinError(frame ? frame.code : "timeout", `Could not join ${channelLabel(channel)}: ${why}.`);
    }
    if (!conv || conv.kind !== "channel" || conv.state === "joined") return;
    if (frame && frame.code !== "rate_limited") {
      // The server will not have it (a rule changed, a session's room over the limit).
      if (!asked.byUser) systemLine(`Could not rejoin ${channelLabel(channel)}: ${why}.`, "warn");
      removeConversation(conv);
    } else {
      conv.state = "out";
      updateEntry(conv);
      if (conv.key === selectedKey) showConversation();
    }
  }

  // Errors about a channel this page asked for: shown where they belong.
  function channelError(frame) {
    if (frame.code === "rate_limited" && lastSent && lastSent.startsWith("subscribe:")) {
      const channel = lastSent.slice("subscribe:".length);
      if (joining.has(channel)) {
        joinFailed(channel, {code: "rate_limited",
          message: `${String(frame.message ?? "too many requests")}; try again in a moment`});
        return true;
      }
    }
    if (typeof frame.channel !== "string") return false;
    const channel = frame.channel;
    if (joining.has(channel)) {
      joinFailed(channel, frame);
      return true;
    }
    if (frame.code === "forbidden" && presenceAsked.has(channel)) {
      presenceAsked.delete(channel);
      const conv = conversations.get(channel);
      if (conv) {
        conv.hasPresence = false;
        conv.members = null;
        if (conv.key === selectedKey) showConversation();
      }
      return true;
    }
    return false;
  }

  function leaveRoom(conv) {
    if (conv.kind !== "channel") return;
    if (conv.state !== "joined") {
      removeConversation(conv);  // nothing on the server to leave
      return;
    }
    if (!send({type: "unsubscribe", channel: conv.channel})) return;
    conv.state = "leaving";
    updateEntry(conv);
    showConversation();
  }

  function removeConversation(conv) {
    conversations.delete(conv.key);
    conv.item.remove();
    presenceAsked.delete(conv.channel);
    saveView();
    if (conv.key === selectedKey) {
      select(DEFAULT_KEY, {});
    } else {
      updateUnreadTotal();
    }
  }

  function connectionLost() {
    for (const [channel, asked] of joining) {
      clearTimeout(asked.timer);
      if (asked.byUser) {
        showJoinError("not_connected", `The connection dropped before ${channelLabel(channel)} ` +
          "was joined; if it is not in the list once the connection is back, try again.");
      }
    }
    joining.clear();
    presenceAsked.clear();
    lastSent = null;
  }

  // -- presence -------------------------------------------------------------------

  function askPresence(channel) {
    if (send({type: "presence", channel})) presenceAsked.add(channel);
  }

  // Presence is one entry per connection, and join/leave name the connection's
  // client_id: a resumed client can join on its new connection before its old one's
  // leave arrives, so connections are counted per client_id rather than kept as a set.
  function setMembers(conv, list) {
    conv.members = new Map();
    conv.hasPresence = true;
    for (const entry of Array.isArray(list) ? list : []) {
      if (!entry || entry.client_id == null) continue;
      const id = String(entry.client_id);
      const known = conv.members.get(id);
      if (known) {
        known.count += 1;
      } else {
        conv.members.set(id, {user: String(entry.user ?? id), count: 1});
      }
    }
    presenceChanged(conv, null);
  }

  function presenceList(frame) {
    const channel = String(frame.channel);
    presenceAsked.delete(channel);
    const conv = conversations.get(channel);
    if (conv && conv.kind === "channel") setMembers(conv, frame.clients);
  }

  function joinOrLeave(frame) {
    const conv = conversations.get(String(frame.channel));
    if (!conv || conv.kind !== "channel" || frame.client_id == null) return;
    const id = String(frame.client_id);
    const user = String(frame.user ?? id);
    if (conv.members === null) {
      // News of a room whose presence the page has not heard yet: ask for the list.
      conv.members = new Map();
      askPresence(conv.channel);
    }
    conv.hasPresence = true;
    const known = conv.members.get(id);
    if (frame.type === "join") {
      if (known) {
        known.count += 1;
      } else {
        conv.members.set(id, {user, count: 1});
      }
      presenceChanged(conv, user);
    } else if (known) {
      known.count -= 1;
      // This page's own old connection leaving does not make it absent.
      if (known.count <= 0 && id !== clientId) conv.members.delete(id);
      if (known.count <= 0 && id === clientId) known.count = 1;
      presenceChanged(conv, null);
    }
  }

  function presenceChanged(conv, arrived) {
    updateEntry(conv);
    if (conv.key === selectedKey) showConversation(arrived);
  }

  // The room's people: one entry per user, however many connections they have.
  function usersIn(conv) {
    const users = new Set();
    if (conv.members) for (const member of conv.members.values()) users.add(member.user);
    if (conv.state === "joined" && me !== null && conv.members !== null) users.add(me);
    return [...users].sort((a, b) => (a === me ? -1 : b === me ? 1 : a.localeCompare(b)));
  }

  function renderPeople(conv, arrived) {
    const users = usersIn(conv);
    ui.peopleCount.textContent = conv.members === null ? "" : String(users.length);
    ui.peopleList.replaceChildren(...users.map((user) => {
      const item = document.createElement("li");
      item.dataset.testid = "person";
      item.dataset.user = user;
      if (user === arrived) item.classList.add("arrived");
      if (user === me) {
        item.classList.add("me");
        const self = document.createElement("div");
        self.className = "person";
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = "you";
        self.append(avatar(user), nameSpan(user), you);
        item.append(self);
      } else {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "person";
        button.dataset.testid = "person-dm";
        button.title = `Send ${user} a direct message`;
        button.append(avatar(user), nameSpan(user));
        button.addEventListener("click", () => openDm(user));
        item.append(button);
      }
      return item;
    }));
  }

  function openDm(user) {
    const conv = ensureDm(user);
    closeDrawer(false);
    select(conv.key, {focusText: true});
  }

  // -- the sidebar and the header -------------------------------------------------

  function channelLabel(channel) {
    if (channel.startsWith(ROOM_PREFIX)) return `#${channel.slice(ROOM_PREFIX.length)}`;
    return channel;
  }

  function titleOf(conv) {
    if (conv.kind === "dm") return conv.peer;
    if (conv.kind === "default") return defaultChannel ?? "everyone";
    return channelLabel(conv.channel).replace(/^#/, "");
  }

  function avatarTone(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return `av-${h % AVATAR_TONES}`;
  }

  function avatar(name) {
    const span = document.createElement("span");
    span.className = `avatar ${avatarTone(name)}`;
    span.setAttribute("aria-hidden", "true");
    const letters = name.replace(/[^\p{L}\p{N}]/gu, "");
    span.textContent = (letters || name || "?").slice(0, 2).toUpperCase();
    return span;
  }

  function nameSpan(name) {
    const span = document.createElement("span");
    span.className = "name";
    span.textContent = name;
    span.title = name;
    return span;
  }

  function sidebarEntry(conv) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chan";
    button.dataset.testid = "conversation";
    button.dataset.key = conv.key;
    button.dataset.kind = conv.kind;
    if (conv.channel) button.dataset.channel = conv.channel;
    if (conv.peer !== null) button.dataset.peer = conv.peer;
    let icon;
    if (conv.kind === "dm") {
      icon = avatar(conv.peer);
    } else {
      icon = document.createElement("span");
      icon.className = "hash";
      icon.setAttribute("aria-hidden", "true");
      icon.textContent = conv.kind === "default" ? "✱" : "#";
    }
    const name = nameSpan("");
    const note = document.createElement("span");
    note.className = "chan-state";
    const badge = document.createElement("span");
    badge.className = "unread";
    badge.dataset.testid = "unread";
    badge.hidden = true;
    button.append(icon, name, note, badge);
    button.addEventListener("click", () => select(conv.key, {fromList: true}));
    item.append(button);
    conv.button = button;
    conv.nameEl = name;
    conv.noteEl = note;
    conv.badge = badge;
    updateEntry(conv);
    if (conv.kind === "default") ui.channelList.prepend(item);
    return item;
  }

  function placeInSidebar(conv) {
    if (conv.kind === "dm") {
      ui.dmList.append(conv.item);
      ui.dmHint.hidden = true;
    } else {
      ui.channelList.append(conv.item);
    }
  }

  function updateEntry(conv) {
    const title = titleOf(conv);
    conv.nameEl.textContent = title;
    conv.nameEl.title = conv.kind === "channel" ? conv.channel : title;
    const notes = {joining: "joining…", leaving: "leaving…", out: "not joined"};
    conv.noteEl.textContent = conv.kind === "channel" ? (notes[conv.state] ?? "") : "";
    conv.button.dataset.state = conv.state;
    conv.badge.hidden = conv.unread === 0;
    conv.badge.textContent = conv.unread > 99 ? "99+" : String(conv.unread);
    const unread = conv.unread === 0 ? "" : `, ${conv.unread} unread`;
    conv.button.setAttribute("aria-label", `${conv.kind === "dm" ? "Direct messages with " : ""}` +
      `${conv.kind === "channel" ? channelLabel(conv.channel) : title}${unread}`);
    if (conv.key === selectedKey) {
      conv.button.setAttribute("aria-current", "true");
    } else {
      conv.button.removeAttribute("aria-current");
    }
  }

  function updateUnreadTotal() {
    let total = 0;
    for (const conv of conversations.values()) total += conv.unread;
    ui.unreadTotal.hidden = total === 0;
    ui.unreadTotal.textContent = total > 99 ? "99+" : String(total);
    ui.sidebarOpen.setAttribute("aria-label", total === 0 ? "Channels" :
      `Channels, ${total} unread`);
    updateTitle();
  }

  function updateTitle() {
    let total = 0;
    for (const conv of conversations.values()) total += conv.unread;
    const name = state === "open" ? "Relay" : `Relay (${state})`;
    document.title = total === 0 ? name : `(${total}) ${name}`;
  }

  // The header, the people panel and the message box follow the selected conversation.
  function showConversation(arrived = null) {
    const conv = conversations.get(selectedKey) ?? defaultConv;
    ui.chanName.textContent = conv.kind === "dm" ? `@${conv.peer}` :
      conv.kind === "channel" ? channelLabel(conv.channel) : titleOf(conv);
    const room = conv.kind === "channel";
    const people = room && conv.hasPresence === true && conv.state === "joined";
    const count = people && conv.members !== null ? usersIn(conv).length : null;
    let info;
    if (conv.kind === "default") {
      info = "everyone connected";
    } else if (conv.kind === "dm") {
      info = conv.peer === me ? "notes to yourself" : "direct messages: only the two of you";
    } else if (conv.state === "joining") {
      info = "joining…";
    } else if (conv.state === "leaving") {
      info = "leaving…";
    } else if (conv.state === "out") {
      info = "you are not in this room";
    } else if (count !== null) {
      info = `${count} ${count === 1 ? "person" : "people"} here`;
    } else {
      info = "room";
    }
    ui.chanInfo.textContent = info;
    ui.log.setAttribute("aria-label", `Messages in ${ui.chanName.textContent}`);
    ui.leave.hidden = !(room && (conv.state === "joined" || conv.state === "leaving"));
    ui.leave.disabled = conv.state === "leaving";
    ui.rejoin.hidden = !(room && conv.state === "out");
    ui.people.hidden = !people;
    ui.peopleOpen.hidden = !people;
    ui.peopleOpenCount.textContent = count === null ? "" : String(count);
    if (!people && document.body.dataset.drawer === "people") closeDrawer(false);
    if (people) {
      renderPeople(conv, arrived);
    } else {
      ui.peopleList.replaceChildren();
      ui.peopleCount.textContent = "";
    }
    const where = conv.kind === "dm" ? `@${conv.peer}` :
      conv.kind === "channel" ? channelLabel(conv.channel) : "everyone";
    // The hint fits a phone's message box beside a short name only.
    ui.text.placeholder = where.length <= 12 ? `Message ${where} – Enter sends` :
      `Message ${where}`;
  }

  function select(key, {focusText = false, fromList = false, refresh = true} = {}) {
    const conv = conversations.get(key);
    if (!conv) return;
    const before = conversations.get(selectedKey);
    if (before) {
      before.following = following;
      before.scrollTop = ui.log.scrollTop;
    }
    selectedKey = key;
    conv.unread = 0;
    for (const each of conversations.values()) updateEntry(each);
    updateUnreadTotal();
    ui.log.replaceChildren(...conv.nodes);
    ui.log.dataset.conversation = key;
    if (conv.following) {
      scrollToNewest();
    } else {
      ui.log.scrollTop = conv.scrollTop;
      following = false;
      ui.jump.hidden = false;
    }
    showConversation();
    if (refresh && conv.kind === "channel" && conv.state === "joined" && conv.hasPresence) {
      askPresence(conv.channel);  // cheap, and heals anything a race got wrong
    }
    saveView();
    if (fromList && document.body.dataset.drawer === "sidebar") {
      closeDrawer(false);
      focusText = true;
    }
    if (focusText) ui.text.focus();
  }

  ui.join.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = ui.joinName.value.trim();
    if (name === "") {
      showJoinError("empty", "Type a room name, like lobby.");
      return;
    }
    const channel = name.includes(":") ? name : `${ROOM_PREFIX}${name}`;
    if (!CHANNEL_NAME.test(channel) || channel.endsWith(":")) {
      showJoinError("invalid_name", `“${name}” is not a room name: use letters, digits ` +
        "and _ . : @ - (at most 128).");
      return;
    }
    const known = conversations.get(channel);
    if (channel === defaultChannel || (known && known.state === "joined")) {
      ui.joinName.value = "";
      showJoinError(null);
      closeDrawer(false);
      select(channel === defaultChannel ? DEFAULT_KEY : channel, {focusText: true});
      return;
    }
    if (!subscribe(channel, true, known ? known.lastId : null)) {
      showJoinError("not_connected", "Not connected: try again when the connection is back.");
    }
  });

  function showJoinError(code, text) {
    ui.joinError.hidden = code === null;
    ui.joinError.dataset.code = code ?? "";
    ui.joinError.textContent = text ?? "";
    if (code === null) {
      ui.joinName.removeAttribute("aria-invalid");
    } else {
      ui.joinName.setAttribute("aria-invalid", "true");
    }
  }

  ui.joinName.addEventListener("input", () => {
    if (!ui.joinError.hidden) showJoinError(null);
  });

  ui.leave.addEventListener("click", () => {
    const conv = conversations.get(selectedKey);
    if (!conv || conv.kind !== "channel") return;
    if (state !== "open") {
      showError("not_connected", "Not connected.", "Leave the room once the connection is back.");
      return;
    }
    leaveRoom(conv);
  });

  ui.rejoin.addEventListener("click", () => {
    const conv = conversations.get(selectedKey);
    if (!conv || conv.kind !== "channel") return;
    if (!subscribe(conv.channel, true, conv.lastId)) {
      showError("not_connected", "Not connected.", "Join the room once the connection is back.");
    }
  });

  // -- drawers (narrow screens) ---------------------------------------------------

  // Below the widths where the sidebar and the people list have columns of their own,
  // they slide in over the conversation; the CSS decides, from body[data-drawer].
  function openDrawer(which) {
    document.body.dataset.drawer = which;
    ui.backdrop.hidden = false;
    ui.sidebarOpen.setAttribute("aria-expanded", String(which === "sidebar"));
    ui.peopleOpen.setAttribute("aria-expanded", String(which === "people"));
    const panel = which === "sidebar" ? ui.sidebar : ui.people;
    const current = panel.querySelector("[aria-current=true]");
    (current ?? panel.querySelector("button")).focus();
  }

  function closeDrawer(returnFocus) {
    const which = document.body.dataset.drawer;
    if (!which) return;
    delete document.body.dataset.drawer;
    ui.backdrop.hidden = true;
    ui.sidebarOpen.setAttribute("aria-expanded", "false");
    ui.peopleOpen.setAttribute("aria-expanded", "false");
    if (returnFocus) (which === "sidebar" ? ui.sidebarOpen : ui.peopleOpen).focus();
  }

  ui.sidebarOpen.addEventListener("click", () => openDrawer("sidebar"));
  ui.peopleOpen.addEventListener("click", () => openDrawer("people"));
  ui.sidebarClose.addEventListener("click", () => closeDrawer(true));
  ui.peopleClose.addEventListener("click", () => closeDrawer(true));
  ui.backdrop.addEventListener("click", () => closeDrawer(true));
  // A window grown past the drawer widths shows the panel as a column: no drawer then.
  window.addEventListener("resize", () => {
    const which = document.body.dataset.drawer;
    const panel = which === "sidebar" ? ui.sidebar : which === "people" ? ui.people : null;
    if (panel && getComputedStyle(panel).position !== "fixed") closeDrawer(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.body.dataset.drawer) {
      event.preventDefault();
      closeDrawer(true);
    }
  });

  // -- keeping the view across a reload -------------------------------------------

  function saveView() {
    const rooms = [];
    const dms = [];
    for (const conv of conversations.values()) {
      if (conv.kind === "channel") rooms.push({channel: conv.channel, lastId: conv.lastId});
      if (conv.kind === "dm") dms.push({peer: conv.peer, messages: conv.frames.slice(-DM_KEEP)});
    }
    store.set(VIEW_KEY, JSON.stringify({selected: selectedKey, defaultChannel, rooms, dms}));
  }

  function loadView() {
    let view;
    try {
      view = JSON.parse(store.get(VIEW_KEY) ?? "null");
    } catch {
      view = null;
    }
    if (!view || typeof view !== "object") return;
    if (typeof view.defaultChannel === "string") defaultChannel = view.defaultChannel;
    for (const room of Array.isArray(view.rooms) ? view.rooms : []) {
      if (!room || typeof room.channel !== "string") continue;
      const conv = ensureChannel(room.channel);
      if (typeof room.lastId === "string") conv.lastId = room.lastId;
    }
    for (const dm of Array.isArray(view.dms) ? view.dms : []) {
      if (!dm || typeof dm.peer !== "string") continue;
      const conv = ensureDm(dm.peer);
      for (const frame of Array.isArray(dm.messages) ? dm.messages : []) {
        if (frame && typeof frame === "object" && remember(conv, String(frame.id))) {
          addMessage(conv, frame, false);
        }
      }
    }
    updateEntry(defaultConv);
    if (typeof view.selected === "string" && conversations.has(view.selected)) {
      selectedKey = view.selected;
    }
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

  // A message joins its conversation; it counts as unread there unless that is the
  // conversation on screen, it is our own, or it is old context (`countUnread` false).
  function addMessage(conv, frame, countUnread) {
    const mine = String(frame.from ?? "") === clientId || Boolean(frame.local);
    if (conv.kind === "dm") conv.frames.push(frame);
    if (conv.frames.length > DM_KEEP) conv.frames.shift();
    const item = renderMessage(frame, mine);
    if (countUnread && !mine && conv.key !== selectedKey) {
      conv.unread += 1;
      updateEntry(conv);
      updateUnreadTotal();
    }
    place(conv, item, mine);
  }

  function renderMessage(frame, mine) {
    const cls = String(frame.class ?? "");
    const from = String(frame.from ?? "");
    const user = frame.user == null ? from : String(frame.user);
    const item = document.createElement("li");
    item.className = `msg ${toneFor(cls)}`;
    if (frame.history) item.classList.add("history");
    if (mine) item.classList.add("mine");
    item.dataset.testid = "message";
    item.dataset.id = String(frame.id);
    item.dataset.class = cls;
    item.dataset.from = from;
    item.dataset.user = user;
    if (frame.channel != null) item.dataset.channel = String(frame.channel);
    if (frame.history) item.dataset.history = "true";

    const meta = document.createElement("div");
    meta.className = "meta";
    const sender = document.createElement("span");
    sender.className = "from";
    sender.textContent = mine ? `${user} (you)` : user;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = cls;
    const time = document.createElement("time");
    if (Number.isFinite(frame.ts)) time.dateTime = new Date(frame.ts * 1000).toISOString();
    time.textContent = clock(frame.ts);
    meta.append(avatar(user), " ", sender, " ", badge, " ", time);
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
    return item;
  }

  function systemItem(text, kind) {
    const item = document.createElement("li");
    item.className = `system${kind ? ` ${kind}` : ""}`;
    item.dataset.testid = "system";
    const time = document.createElement("time");
    time.textContent = clock();
    item.append(time, " ", text);
    return item;
  }

  // Connection news concerns every conversation: each gets the line.
  function systemLine(text, kind) {
    for (const conv of conversations.values()) place(conv, systemItem(text, kind), false);
  }

  function noteIn(conv, text, kind) {
    place(conv, systemItem(text, kind), false);
  }

  function place(conv, item, force) {
    conv.nodes.push(item);
    while (conv.nodes.length > LOG_LIMIT) conv.nodes.shift().remove();
    if (conv.key === selectedKey) appendToLog(item, force);
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

  // Any frame to the server, if the connection is open; whether it went out.
  function send(frame) {
    if (ws === null || state !== "open" || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // Where the selected conversation's messages go: the default channel (no `channel`
  // needed), a room, or the other person's personal channel for a DM.
  function target() {
    const conv = conversations.get(selectedKey) ?? defaultConv;
    if (conv.kind === "dm") {
      return {channel: `${personalNamespace}:${conv.peer}`, peer: conv.peer};
    }
    return {channel: conv.kind === "channel" ? conv.channel : null, peer: null};
  }

  function messageFrame(cls, content, to) {
    const frame = {type: cls, content};
    if (to.channel !== null) frame.channel = to.channel;
    return frame;
  }

  // Returns whether the frame went out; the caller decides what to do otherwise.
  function transmit(cls, content, to) {
    if (!send(messageFrame(cls, content, to))) return false;
    lastSent = "message";
    // We are not in the other person's channel, so no copy comes back: keep our own.
    // (A DM to ourselves does come back, on our personal channel.)
    if (to.peer !== null && to.peer !== me) {
      addMessage(ensureDm(to.peer), {
        type: "message",
        id: `local-${Date.now()}-${++localSeq}`,
        channel: to.channel,
        from: clientId,
        user: me,
        class: cls,
        content,
        ts: Date.now() / 1000,
        local: true,
        to: to.peer,
      }, false);
      saveView();
    }
    return true;
  }

  function flushPending() {
    while (pending.length > 0 && transmit(pending[0].cls, pending[0].content, pending[0].to)) {
      pending.shift();
    }
    showPending();
  }

  function submit() {
    const content = ui.text.value;
    if (content.trim() === "") return;
    const cls = ui.cls.value;
    const to = target();
    if (tooBig(JSON.stringify(messageFrame(cls, content, to)))) {
      showError("too_big", "Message too long.",
        `The server accepts at most ${maxMessageBytes} bytes per message.`);
      return;
    }
    if (!transmit(cls, content, to)) {
      if (state === "refused") {
        showError("not_connected", "Not connected.", "Press Reconnect first; your text is kept.");
        return;
      }
      if (pending.length >= PENDING_LIMIT) {
        showError("not_connected", "Not connected.",
          `${PENDING_LIMIT} messages are already waiting; your text is kept.`);
        return;
      }
      pending.push({cls, content, to});
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
    const to = target();
    for (let i = 1; i <= BURST_SIZE; i++) transmit(cls, `burst ${i}/${BURST_SIZE}`, to);
  });

  ui.priorityTest.addEventListener("click", () => {
    if (!needConnection()) return;
    const names = classes();
    const low = names.includes("status") ? "status" : names[names.length - 1];
    const high = names.includes("critical") ? "critical" : names[0];
    const to = target();
    for (let i = 1; i <= PRIORITY_BATCH; i++) {
      transmit(low, `priority test: ${low} ${i}/${PRIORITY_BATCH}`, to);
    }
    transmit(high, `priority test: ${high} (sent last)`, to);
  });

  loadView();
  select(selectedKey, {});
  connect();
})();
