"use strict";
(() => {
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const form = document.getElementById("send");
  const text = document.getElementById("text");
  const cls = document.getElementById("cls");
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);

  function show(kind, line) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = line;  // always text, never HTML
    log.appendChild(item);
    item.scrollIntoView({block: "end"});
  }

  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "welcome") {
      status.textContent = `connected to ${frame.instance} as ${frame.client_id}`;
    } else if (frame.type === "message") {
      show(`message ${frame.class}`, `${frame.from} [${frame.class}]: ${frame.content}`);
    } else if (frame.type === "error") {
      show("error", `error ${frame.code}: ${frame.message}`);
    } else if (frame.type === "heartbeat") {
      status.textContent = `heartbeat every ${frame.interval}s, ${frame.clients} clients`;
    }
  };
  socket.onclose = (event) => { status.textContent = `closed (${event.code}) ${event.reason}`; };
  form.onsubmit = (event) => {
    event.preventDefault();
    socket.send(JSON.stringify({type: cls.value, content: text.value}));
    text.value = "";
  };
})();
