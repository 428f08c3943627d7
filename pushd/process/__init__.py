"""The process: data directory, TLS, interpreter tuning, the HTTP server's connection
limits, the encryption key ring."""
