"""The engine: connections, outbound queues, fan-out, and the plugin hooks around them."""
