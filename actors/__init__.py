"""The actor runtime and the actors (per-user mailbox, ...).

Imports neither aiohttp nor aiormq nor anything from `pushd`: it talks to the edge
through small protocols (`actors.transport.Transport`).
"""
