"""The HTTP front door: JSON API, server-sent events, the web view, its runner."""
