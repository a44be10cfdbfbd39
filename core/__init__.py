"""The engine and what it stands on, in layers (each imports only those below it):

- `engine`: connections, their outbound queues, the hub's fan-out, the hook runner and
  the plugin API: what happens to a connection and a message.
- `transport`: the one adapter to Tornado's WebSocket internals.
- `stores`: shared state and the broker, in memory or in Redis.
- `access`: who may connect (origins, client addresses behind proxies).
- `ops`: metrics, logs, refusal summaries.
- `config`: config.yaml to typed, validated settings.
- `wire`: the protocol's frames and message ids.
"""
