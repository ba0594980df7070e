"""The running system: supervisor, worker runner, bus, config client, journal, admin service."""
