"""Installed like a tool: which config a command reads, `memproxy init`, the service units, client setup."""
