"""TLS for `pushd serve` itself (`server.tls_cert`, `server.tls_key`): the single-binary
deploy serves HTTPS and WSS without a proxy in front."""

from __future__ import annotations

import ssl

from pushd.config.settings import Config, ConfigError


def server_tls(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP. Reads the files: call it before
    the event loop runs. Raises `ConfigError` naming the setting when they are unusable."""
    server = config.server
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError(
            "set both server.tls_cert and server.tls_key (or neither, for plain HTTP)"
        )
    if not server.tls:
        return None
    # Modern defaults of the standard library: TLS 1.2+, no compression, good ciphers.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"server.tls_cert/tls_key: {exc.filename or 'file'} does not exist"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"server.tls_cert {server.tls_cert!r} / server.tls_key {server.tls_key!r} cannot "
            f"be used (PEM certificate chain and its private key expected): {exc}"
        ) from None
    return context
