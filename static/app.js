// The Relay browser client page: channels, presence and direct messages, no framework.
// The connection itself (reconnecting, resuming the session and the subscriptions, the
// heartbeat watchdog, the rate limit's retry_after) is relay.js, the library this page
// is written with; everything here is what a person sees.
//
// Every piece of text that comes from the network is written with textContent (never
// innerHTML), and nothing here sets inline styles: the page runs under a strict
// Content-Security-Policy, so all looks come from classes in style.css.
//
// Conversations: the default channel, the rooms the client joined, and direct messages.
// A direct message to someone is a message to their personal channel (`user:<them>`);
// one to us arrives on ours (`user:<us>`), so DMs are grouped by the other person.
import {RelayClient, RelayError} from "./relay.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $("conn"),
  state: $("state"),
  reason: $("state-reason"),
  reconnect: $("reconnect"),
  redis: $("redis-banner"),
  instance: $("instance"),
  me: $("me"),
  signinOpen: $("signin-open"),
  signout: $("signout"),
  clientId: $("client-id"),
  session: $("session-kind"),
  clients: $("clients"),
  heartbeat: $("heartbeat"),
  heartbeatLast: $("heartbeat-last"),
  pulse: $("pulse"),
  signin: $("signin"),
  signinWhy: $("signin-why"),
  signinName: $("signin-name"),
  signinUser: $("signin-user"),
  signinCritical: $("signin-critical"),
  signinToken: $("signin-token"),
  signinJwt: $("signin-jwt"),
  signinGuest: $("signin-guest"),
  signinError: $("signin-error"),
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
  sendButton: $("send-button"),
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
// Who the tab signed in as: {token, user, expires, dev, critical}. The tab's, like its
// session.
const AUTH_KEY = "relay.auth";
const LOG_LIMIT = 500;
const SEEN_LIMIT = 2000;
const DM_KEEP = 100;  // messages per DM conversation kept across a reload
const BURST_SIZE = 20;
// Four status messages and a critical fit the shipped rate limit (burst 5), so the
// critical one is never the message the limit drops.
const PRIORITY_BATCH = 4;
const ERROR_VISIBLE_MS = 10000;
const HEALTH_EVERY_MS = 3000;
// A refusal comes within a round trip; one later than this is about something else.
const REFUSAL_WINDOW_MS = 5000;
// Dev tokens are renewed this long before they expire.
const REFRESH_BEFORE_S = 60;
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
  unauthorized: "Not signed in.",
};
// Fixed colours for the shipped classes; any other class configured on the server
// gets one of the spare tones, chosen by its name so it keeps its colour.
const KNOWN_TONES = {critical: "tone-critical", normal: "tone-normal", status: "tone-status"};
const SPARE_TONES = ["tone-a", "tone-b", "tone-c", "tone-d"];
const AVATAR_TONES = 8;
const ROOM_PREFIX = "room:";
// What the server accepts as a channel name (docs/protocol.md).
const CHANNEL_NAME = /^[A-Za-z0-9_.:@-]{1,128}$/;
// What POST /auth/dev-token accepts as a name (docs/identity.md).
const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// A guest's user is its client id, which says nothing to a person: a short form of it
// is shown instead.
const CLIENT_ID = /^[0-9a-f]{16}$/;

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

let client = null;
let state = "connecting";
let everWelcomed = false;
let retryTicker = null;
let lastError = null;
let clientId = null;
let beats = 0;
let maxMessageBytes = null;
let auth = loadAuth();
let refreshTimer = null;
// The text last sent from the message box, until it is known not to have been refused:
// a refusal puts it back, so that what was typed is never lost.
let lastTyped = null;
let demoAt = 0;  // when the priority demo last ran
const seen = new Set();
// Users known to be guests (their user is their client id).
const guests = new Set();

// -- connection -----------------------------------------------------------------

function socketUrl() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

// One RelayClient per identity: signing in or out starts another (with the same
// session, which a guest's may be resumed into after signing in).
function startClient() {
  if (client !== null) client.close();
  lastError = null;
  const view = readView();
  const rooms = (Array.isArray(view.rooms) ? view.rooms : [])
    .filter((room) => room && typeof room.channel === "string");
  const cursors = {};
  for (const room of rooms) {
    if (typeof room.lastId === "string") cursors[room.channel] = room.lastId;
  }
  client = new RelayClient(socketUrl(), {
    token: auth ? auth.token : undefined,
    session: store.get(TOKEN_KEY) ?? undefined,
    since: store.get(LAST_ID_KEY) ?? undefined,
    cursors,
    channels: rooms.filter((r) => r.state !== "leaving").map((r) => r.channel),
  });
  const on = (type, fn) => client.on(type, fn);
  on("state", connectionState);
  on("welcome", welcome);
  on("message", message);
  on("heartbeat", heartbeat);
  on("error", error);
  on("ratelimit", rateLimitedUntil);
  on("subscribed", subscribed);
  on("unsubscribed", unsubscribed);
  on("join", joinOrLeave);
  on("leave", joinOrLeave);
  on("presence", presenceList);
  client.connect().catch(() => {});  // a refusal is shown by connectionState
}

function connectionState(next, detail) {
  clearInterval(retryTicker);
  retryTicker = null;
  if (next === "open") return;  // welcome() has the rest
  if (next === "connecting") {
    setState(everWelcomed ? "reconnecting" : "connecting", everWelcomed ? "connecting…" : "");
    return;
  }
  connectionLost();
  const why = describeClose(detail.code, detail.reason, detail.error);
  if (detail.code === CLOSE_POLICY) {
    if (detail.error && detail.error.code === "unauthorized") {
      setState("refused", why);
      showSignIn(auth ? "expired" : "needed", why);
      return;
    }
    setState("refused", why);
    systemLine(`Refused: ${why}. Press Reconnect to try again.`, "bad");
    return;
  }
  if (detail.retryAt === null) {
    setState("closed", "");
    return;
  }
  if (detail.wasOpen && everWelcomed) systemLine(`Disconnected: ${why}.`, "warn");
  const show = () => {
    const left = Math.max(0, (detail.retryAt - Date.now()) / 1000);
    setState("reconnecting", `${why} – retrying in ${left.toFixed(1)} s`);
  };
  show();
  retryTicker = setInterval(show, 200);
}

function describeClose(code, reason, error) {
  // The server sends an error frame just before closing for a reason; an older error
  // (a rejected message, say) is not why the connection ended.
  const expected = CLOSE_ERRORS[code];
  if (error && error.message && (code === CLOSE_POLICY ||
      (expected !== undefined && expected === error.code))) {
    return String(error.message);
  }
  if (reason) return reason;
  if (code == null) return "the connection was lost";
  return CLOSE_TEXT[code] || `closed with code ${code}`;
}

function setState(next, why) {
  state = next;
  ui.conn.dataset.state = next;
  document.body.dataset.state = next;
  ui.state.textContent = next;
  ui.reason.textContent = why || "";
  // While a retry is merely waiting its turn, the user may skip the wait.
  const waiting = next === "reconnecting" && client !== null && client.nextAttemptAt !== null;
  ui.reconnect.hidden = !(next === "refused" || waiting);
  ui.reconnect.textContent = next === "refused" ? "Reconnect" : "Reconnect now";
  updateTitle();
}

ui.reconnect.addEventListener("click", () => {
  if (client === null) return;
  if (state === "refused" && lastError && lastError.code === "unauthorized") {
    showSignIn(auth ? "expired" : "needed", describeClose(CLOSE_POLICY, "", lastError));
    return;
  }
  client.connect().catch(() => {});
});

// -- signing in -----------------------------------------------------------------

function loadAuth() {
  try {
    const saved = JSON.parse(store.get(AUTH_KEY) ?? "null");
    if (saved && typeof saved.token === "string" && typeof saved.user === "string") return saved;
  } catch {
    // not ours, or from an older page: signed out
  }
  return null;
}

function saveAuth(value) {
  auth = value;
  if (value === null) {
    store.remove(AUTH_KEY);
  } else {
    store.set(AUTH_KEY, JSON.stringify(value));
  }
  scheduleRefresh();
}

// Whether the server signs people in by name (plugins.auth.dev_tokens).
let devTokens = false;

async function askDevTokens() {
  try {
    const response = await fetch("/auth/dev-token", {headers: {Accept: "application/json"}});
    await response.text();  // read to the end: the request is not over until then
    devTokens = response.status === 200;
  } catch {
    devTokens = false;
  }
  return devTokens;
}

async function devToken(user, critical) {
  const body = {user};
  // The demo's own sign-in may send critical messages, so that the priority demo can
  // show one; a token from a real backend says so in its `classes` claim.
  if (critical) body.classes = ["critical"];
  const response = await fetch("/auth/dev-token", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.status !== 200) {
    throw new Error(answer.error || `the server answered ${response.status}`);
  }
  return answer;
}

// mode: "choose" (dev tokens: a name, or a guest), "needed" (the server refused a
// guest), "expired" (it refused the token), "token" (the user asked to sign in).
function showSignIn(mode, why) {
  ui.signin.hidden = false;
  ui.signin.dataset.mode = mode;
  ui.signinName.hidden = !devTokens;
  ui.signinToken.hidden = devTokens;
  ui.signinGuest.hidden = mode === "needed";
  const reasons = {
    choose: "Pick a name to be shown by, or continue as a guest.",
    needed: `This server does not take guests${why ? ` (${why})` : ""}.`,
    expired: `The server did not accept the token${why ? ` (${why})` : ""}; sign in again.`,
    token: "",
  };
  ui.signinWhy.textContent = reasons[mode] ?? "";
  showSignInError("");
  (devTokens ? ui.signinUser : ui.signinJwt).focus();
}

function hideSignIn() {
  ui.signin.hidden = true;
  ui.text.focus();
}

function showSignInError(text) {
  ui.signinError.hidden = text === "";
  ui.signinError.textContent = text;
}

// Signing in, out or as a guest: the page starts over as someone else.
function becomeSomeone(value) {
  saveAuth(value);
  hideSignIn();
  showMe();
  startClient();
}

ui.signinName.addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = ui.signinUser.value.trim();
  if (!USER_NAME.test(user)) {
    showSignInError("A name is 1 to 64 letters, digits, “_”, “.” or “-”, starting with a " +
      "letter or digit.");
    return;
  }
  try {
    const critical = ui.signinCritical.checked;
    const issued = await devToken(user, critical);
    becomeSomeone({token: issued.token, user: issued.user, expires: issued.expires, dev: true,
      critical});
  } catch (failure) {
    showSignInError(`Could not sign in: ${failure.message}.`);
  }
});

ui.signinToken.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.signinJwt.value.trim();
  // A JWT is three base64url parts; its `sub` is shown until the welcome says who.
  const parts = token.split(".");
  let claims = null;
  try {
    claims = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    claims = null;
  }
  if (parts.length !== 3 || !claims || typeof claims.sub !== "string") {
    showSignInError("That is not a token: paste the whole JWT (three parts separated by dots).");
    return;
  }
  ui.signinJwt.value = "";
  becomeSomeone({token, user: claims.sub, expires: claims.exp ?? null, dev: false});
});

ui.signinGuest.addEventListener("click", () => becomeSomeone(null));
ui.signinOpen.addEventListener("click", () => showSignIn("token", ""));
ui.signout.addEventListener("click", () => becomeSomeone(null));
ui.signin.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !ui.signinGuest.hidden && client !== null) {
    event.preventDefault();
    hideSignIn();
  }
});

// A dev token is renewed before it expires, on the open connection (`refresh`) and for
// the connections after; another token is the app's to renew.
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (!auth || !auth.dev || !Number.isFinite(auth.expires)) return;
  const due = (auth.expires - REFRESH_BEFORE_S) * 1000 - Date.now();
  refreshTimer = setTimeout(async () => {
    try {
      const issued = await devToken(auth.user, Boolean(auth.critical));
      saveAuth({...auth, token: issued.token, expires: issued.expires});
      client.refresh(issued.token);
    } catch {
      refreshTimer = setTimeout(scheduleRefresh, 10000);  // try again shortly
    }
  }, Math.max(0, due));
}

function showMe() {
  const who = client && client.user !== null ? client.user : auth ? auth.user : null;
  ui.me.textContent = who === null ? "–" : displayName(who);
  ui.me.title = who === null ? "" : who;
  ui.me.dataset.user = who ?? "";
  ui.me.dataset.guest = who !== null && isGuest(who) ? "true" : "false";
  ui.signout.hidden = auth === null;
  ui.signinOpen.hidden = auth !== null;
  ui.signinOpen.textContent = "Sign in";
}

// -- the instance's Redis -------------------------------------------------------

// /healthz says whether this instance reaches its Redis; while it does not, messages
// reach the people on this instance only, which the page says in a banner.
let healthTimer = null;

async function pollHealth() {
  clearTimeout(healthTimer);
  try {
    const response = await fetch("/healthz", {cache: "no-store"});
    const health = await response.json();
    showRedis(health.redis ?? null);
  } catch {
    // The instance is not answering: the connection state says so already.
  }
  healthTimer = setTimeout(pollHealth, HEALTH_EVERY_MS);
}

function showRedis(redis) {
  ui.redis.hidden = redis !== "down";
  ui.redis.dataset.redis = String(redis);
}

// -- frames ---------------------------------------------------------------------

function welcome(frame) {
  const hadSession = store.get(TOKEN_KEY) !== null;
  if (typeof frame.session === "string") store.set(TOKEN_KEY, frame.session);
  if (!frame.resumed) {
    // A fresh session: the old cursor belongs to a session the server forgot.
    store.remove(LAST_ID_KEY);
  }
  clientId = String(frame.client_id);
  if (frame.user != null && String(frame.user) === clientId) guests.add(clientId);
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
  showMe();
  const name = displayName(String(frame.user ?? clientId));
  if (!again) {
    systemLine(`Connected to ${frame.instance} as ${name}.`);
  } else if (frame.resumed) {
    systemLine(`Reconnected to ${frame.instance}; session resumed.`, "good");
  } else {
    systemLine(`Reconnected to ${frame.instance}; the old session had expired, ` +
      `so this is a new one (${name}).`, "warn");
  }
  if (auth !== null && String(frame.user) !== auth.user) {
    systemLine("The server did not sign you in with the token (it does not check tokens): " +
      "you are a guest.", "warn");
  }
  channelsFromWelcome(frame);
  queueMicrotask(showPending);  // after relay.js has sent what waited
}

function message(frame) {
  const id = String(frame.id);
  const conv = conversationOf(frame);
  if (frame.user != null && frame.from != null && String(frame.user) === String(frame.from)) {
    guests.add(String(frame.user));
  }
  // relay.js delivers each message once; the page also keeps what a reload brought
  // back from sessionStorage (direct messages) apart from what the server replays.
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
  if (String(frame.from ?? "") === clientId && lastTyped !== null &&
      String(frame.content) === lastTyped.content) {
    lastTyped = null;  // it came back: accepted
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
    ui.heartbeat.textContent = "off";
    return;
  }
  ui.heartbeat.textContent = `every ${n.toLocaleString()} s`;
}

function error(frame) {
  lastError = frame;
  if (channelError(frame)) return;
  if (frame.code === "unauthorized") return;  // the close that follows says it
  const refusedTyped = takeBackTyped(frame);
  if (frame.code === "rate_limited") {
    countRefusal(frame);
    return;
  }
  if (typeof frame.max_message_size === "number") maxMessageBytes = frame.max_message_size;
  let text = String(frame.message ?? "");
  if (frame.code === "slow_consumer") {
    text += ". Reconnecting; missed messages will be replayed.";
  }
  if (typeof frame.channel === "string") text += ` (${channelLabel(frame.channel)})`;
  if (refusedTyped) text += ". Your text is back in the box.";
  showError(frame.code, ERROR_TITLE[frame.code] || `Error (${frame.code}).`, text);
  if (frame.code === "forbidden" && Date.now() - demoAt < REFUSAL_WINDOW_MS &&
      /critical/.test(String(frame.message ?? ""))) {
    noteIn(conversations.get(selectedKey) ?? defaultConv, "Priority demo: the critical " +
      "message was refused, since only tokens whose classes claim lists “critical” may " +
      "send it. Sign in with such a token to see it overtake.", "warn");
  }
}

// A refused message from the message box comes back to the box, unless something new
// was typed there meanwhile. Errors come back within a round trip and in the order the
// messages were sent, so a refusal soon after a send is that send's.
function takeBackTyped(frame) {
  const typed = lastTyped;
  if (typed === null || Date.now() - typed.at > REFUSAL_WINDOW_MS) return false;
  const aboutMessages = ["rate_limited", "forbidden", "invalid_message", "not_subscribed",
    "invalid_channel"].includes(frame.code);
  if (!aboutMessages) return false;
  if (typeof frame.channel === "string" && frame.channel !== typed.channel) return false;
  lastTyped = null;
  if (ui.text.value !== "") return false;
  ui.text.value = typed.content;
  if (typed.cls && classes().includes(typed.cls)) ui.cls.value = typed.cls;
  return true;
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
// Channels the user asked to join and the server has not answered yet (relay.js keeps
// asking across reconnects; the answer settles the join form).
const joining = new Set();
// Channels whose presence this page asked for (a `forbidden` answer: no presence there).
const presenceAsked = new Set();
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
    if (conv.state === "leaving") continue;  // relay.js says it again
    conv.state = "joined";
    updateEntry(conv);
    if (conv.hasPresence !== false) askPresence(channel);
  }
  // Rooms the page was in that the server does not list (an expired session, a
  // reload after one, a server that crashed): relay.js joins them again, recovering
  // from the last message seen.
  for (const conv of [...conversations.values()]) {
    if (conv.kind !== "channel" || inside.has(conv.channel)) continue;
    if (conv.state === "leaving") {
      removeConversation(conv);
      continue;
    }
    conv.state = "joining";
    updateEntry(conv);
  }
  saveView();
  showConversation();
}

// The user joins a room: relay.js subscribes now or once connected.
function join(channel, since) {
  const conv = conversations.get(channel);
  if (conv && conv.kind === "channel" && conv.state !== "joined") {
    conv.state = "joining";
    updateEntry(conv);
  }
  joining.add(channel);
  showJoinError(null);
  client.subscribe(channel, since ? {since} : {}).then(
    () => joined(channel),
    (failure) => joinFailed(channel, failure.frame ?? {code: failure.code,
      message: failure.message}),
  );
}

function joined(channel) {
  if (!joining.delete(channel)) return;
  const conv = conversations.get(channel);
  if (!conv) return;
  ui.joinName.value = "";
  showJoinError(null);
  closeDrawer(false);
  select(conv.key, {focusText: true, refresh: false});
}

function subscribed(frame) {
  const channel = String(frame.channel);
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
  if (conv.key === selectedKey) showConversation();
}

function unsubscribed(frame) {
  const conv = conversations.get(String(frame.channel));
  if (conv && conv.kind === "channel" && conv.state === "leaving") removeConversation(conv);
}

// The server would not have the channel: a join the user asked for says why under the
// form; a room the page was rejoining goes from the list with a note.
function joinFailed(channel, frame) {
  const byUser = joining.delete(channel);
  const conv = conversations.get(channel);
  const why = String(frame.message ?? frame.code);
  if (byUser) showJoinError(frame.code, `Could not join ${channelLabel(channel)}: ${why}.`);
  if (!conv || conv.kind !== "channel" || conv.state === "joined") return;
  if (!byUser) systemLine(`Could not rejoin ${channelLabel(channel)}: ${why}.`, "warn");
  removeConversation(conv);
}

// Errors about a channel this page asked for: shown where they belong.
function channelError(frame) {
  if (typeof frame.channel !== "string") return false;
  const channel = frame.channel;
  if (joining.has(channel)) return true;  // the join's promise has it
  if (presenceAsked.has(channel)) return true;  // so has the presence request's
  const conv = conversations.get(channel);
  if (conv && conv.kind === "channel" && conv.state === "joining") {
    // relay.js rejoining after a reconnect; it tries again itself when rate limited.
    if (frame.code !== "rate_limited") joinFailed(channel, frame);
    return true;
  }
  return false;
}

function leaveRoom(conv) {
  if (conv.kind !== "channel") return;
  conv.state = "leaving";
  updateEntry(conv);
  showConversation();
  client.unsubscribe(conv.channel).then(() => {
    if (conversations.get(conv.key) === conv) removeConversation(conv);
  }, () => {});
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
  presenceAsked.clear();
}

// -- presence -------------------------------------------------------------------

function askPresence(channel) {
  if (state !== "open" || presenceAsked.has(channel)) return;
  presenceAsked.add(channel);
  client.presence(channel).then(() => presenceAsked.delete(channel), (failure) => {
    presenceAsked.delete(channel);
    if (failure.code !== "forbidden") return;
    const conv = conversations.get(channel);
    if (conv) {  // no presence in this namespace
      conv.hasPresence = false;
      conv.members = null;
      if (conv.key === selectedKey) showConversation();
    }
  });
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
    const user = String(entry.user ?? id);
    if (user === id) guests.add(user);
    if (known) {
      known.count += 1;
    } else {
      conv.members.set(id, {user, count: 1});
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
  if (user === id) guests.add(user);
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
      button.title = `Send ${displayName(user)} a direct message`;
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

// How a person is shown: by their user name, or, for a guest (whose user is its client
// id), by the start of that id.
function isGuest(user) {
  return guests.has(user) || CLIENT_ID.test(user);
}

function displayName(user) {
  return isGuest(user) ? `guest ${user.slice(0, 6)}` : user;
}

function titleOf(conv) {
  if (conv.kind === "dm") return displayName(conv.peer);
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

// A person's name (`user`: shown by displayName) or any other name (`user` null).
function nameSpan(name, user = name) {
  const span = document.createElement("span");
  span.className = "name";
  span.textContent = user === null || name === "" ? name : displayName(user);
  span.title = user === null ? name : user;
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
  ui.chanName.textContent = conv.kind === "dm" ? `@${displayName(conv.peer)}` :
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
  const where = conv.kind === "dm" ? `@${displayName(conv.peer)}` :
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
  if (client === null) {
    showJoinError("not_connected", "Sign in or continue as a guest first.");
    return;
  }
  join(channel, known ? known.lastId : null);
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
  if (client !== null) join(conv.channel, conv.lastId);
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
    if (conv.kind === "channel") {
      rooms.push({channel: conv.channel, lastId: conv.lastId, state: conv.state});
    }
    if (conv.kind === "dm") dms.push({peer: conv.peer, messages: conv.frames.slice(-DM_KEEP)});
  }
  store.set(VIEW_KEY, JSON.stringify({selected: selectedKey, defaultChannel, rooms, dms}));
}

function readView() {
  try {
    const view = JSON.parse(store.get(VIEW_KEY) ?? "null");
    if (view && typeof view === "object") return view;
  } catch {
    // not ours: start afresh
  }
  return {};
}

function loadView() {
  const view = readView();
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
  // A message from the app's backend (the API) has no sender.
  const name = user === "" ? "server" : displayName(user);
  sender.textContent = mine ? `${name} (you)` : name;
  sender.title = user;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = cls;
  const time = document.createElement("time");
  if (Number.isFinite(frame.ts)) time.dateTime = new Date(frame.ts * 1000).toISOString();
  time.textContent = clock(frame.ts);
  meta.append(avatar(user || name), " ", sender, " ", badge, " ", time);
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

// The rate limit: relay.js knows until when the server refuses messages (its
// `ratelimit` event); meanwhile sending is paused, what is typed stays in the box, and
// a countdown says when sending is possible again.
const rate = {until: 0, dropped: 0, timer: null, hideTimer: null};

function rateLimitedUntil(until) {
  if (ui.rl.hidden) {
    rate.dropped = 0;
    ui.rl.dataset.dropped = "0";
    ui.rlDetail.textContent = "Sending is paused by the server's rate limit.";
  }
  rate.until = Math.max(rate.until, until);
  ui.rl.hidden = false;
  clearTimeout(rate.hideTimer);
  if (rate.timer === null) ui.rlSpoken.textContent = "Rate limited; wait a moment before sending.";
  pauseSending(true);
  tickRate();
}

// A message the server refused for the rate limit.
function countRefusal(frame) {
  rate.dropped += 1;
  const n = rate.dropped;
  const detail = String(frame.message ?? "too many messages");
  ui.rlDetail.textContent = `${n} message${n === 1 ? " was" : "s were"} not sent: ${detail}.`;
  ui.rl.dataset.dropped = String(n);
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
  pauseSending(false);
  ui.rl.dataset.waiting = "false";
  ui.rlPrefix.textContent = "You can send again";
  ui.rlCountdown.textContent = "now";
  ui.rlSpoken.textContent = "You can send again.";
  rate.hideTimer = setTimeout(() => { ui.rl.hidden = true; }, 3000);
}

// The box stays editable: only sending waits.
function pauseSending(paused) {
  for (const button of [ui.sendButton, ui.burst, ui.priorityTest]) button.disabled = paused;
  ui.form.dataset.paused = paused ? "true" : "false";
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
  const n = client === null ? 0 : client.queued;
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

// Hands the message to relay.js (which sends it now, or once connected); throws its
// RelayError when it will not take it.
function transmit(cls, content, to) {
  client.publish(content, {cls, channel: to.channel ?? undefined});
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
  queueMicrotask(showPending);  // after relay.js has sent what it could
}

// What to say when relay.js would not take a message; the text stays in the box.
function notTaken(failure) {
  if (!(failure instanceof RelayError)) throw failure;
  if (failure.code === "rate_limited") {
    ui.rlSpoken.textContent = "Still rate limited; your text is kept.";
    return;
  }
  if (failure.code === "queue_full") {
    showError("not_connected", "Not connected.",
      "Too many messages are already waiting for the connection; your text is kept.");
    return;
  }
  showError("not_connected", "Not connected.", "Press Reconnect first; your text is kept.");
}

function submit() {
  const content = ui.text.value;
  if (content.trim() === "") return;
  if (client === null) {
    showError("not_connected", "Not connected.", "Sign in or continue as a guest first.");
    return;
  }
  const cls = ui.cls.value;
  const to = target();
  if (tooBig(JSON.stringify(messageFrame(cls, content, to)))) {
    showError("too_big", "Message too long.",
      `The server accepts at most ${maxMessageBytes} bytes per message.`);
    return;
  }
  try {
    transmit(cls, content, to);
  } catch (failure) {
    notTaken(failure);
    return;
  }
  lastTyped = {content, cls, channel: to.channel, at: Date.now()};
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
  lastTyped = null;  // what the limit refuses now is the burst, not the box's text
  const cls = ui.cls.value;
  const to = target();
  try {
    for (let i = 1; i <= BURST_SIZE; i++) transmit(cls, `burst ${i}/${BURST_SIZE}`, to);
  } catch (failure) {
    notTaken(failure);
  }
});

// The priority demo: a few messages of the lowest class, then one of the highest, all
// at once. relay.js sends what waits together by priority, as the server's queue does
// for a client that is behind, so the last one published arrives first.
ui.priorityTest.addEventListener("click", () => {
  if (!needConnection()) return;
  lastTyped = null;
  const names = Object.entries(client.classes).sort((a, b) => b[1] - a[1]).map(([n]) => n);
  const low = names.includes("status") ? "status" : names[names.length - 1];
  const high = names.includes("critical") ? "critical" : names[0];
  const to = target();
  const conv = conversations.get(selectedKey) ?? defaultConv;
  try {
    for (let i = 1; i <= PRIORITY_BATCH; i++) {
      transmit(low, `priority demo: ${low} ${i}/${PRIORITY_BATCH}`, to);
    }
    transmit(high, `priority demo: ${high} (sent last)`, to);
  } catch (failure) {
    notTaken(failure);
    return;
  }
  demoAt = Date.now();
  noteIn(conv, `Priority demo: ${PRIORITY_BATCH} ${low} messages, then one ${high}, were ` +
    `queued together; the queue sends the highest priority first, so the ${high} one ` +
    "overtakes them.", "demo");
});

// -- starting -------------------------------------------------------------------

// A tab that signed in before, or was connected before, goes on as it was; otherwise,
// where the server signs people in by name, the page asks who they are first.
async function boot() {
  await askDevTokens();
  showMe();
  if (auth !== null) {
    scheduleRefresh();
    startClient();
    return;
  }
  if (devTokens && store.get(TOKEN_KEY) === null) {
    setState("closed", "sign in to connect");
    showSignIn("choose", "");
    return;
  }
  startClient();
}

loadView();
select(selectedKey, {});
pollHealth();
boot();
