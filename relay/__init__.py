"""The composition root: an instance built from settings (stores, engine, plugins, HTTP
routes), reloaded and drained. Everything is built here and passed in."""
