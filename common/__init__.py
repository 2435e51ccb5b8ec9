"""Plumbing without domain: settings, logs, startup, backoff, SQLite, AMQP and loop helpers."""
