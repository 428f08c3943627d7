"""Access control: API keys, user tokens, revocations, rate limits, the audit trail."""
