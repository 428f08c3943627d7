"""Accepting notifications: group commit, idempotency, the outbox relay."""
