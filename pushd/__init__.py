"""pushd: self-hosted notification server. This package is the I/O edge (config, HTTP API,
WebSocket, bus backends, CLI); `actors` is the runtime, `storage` the persistence."""
