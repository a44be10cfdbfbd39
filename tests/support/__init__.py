"""Test support: real redis-server processes, server processes and WebSocket clients."""
