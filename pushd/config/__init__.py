"""Configuration: `settings` (the `Config` sections, loaded from defaults, config.toml,
the environment and flags), `types` (the value types and error every configuration
struct shares, the providers' own included) and `validation_errors` (how a msgspec
decode error names the field at fault, for config keys and request bodies alike).

This file imports nothing, on purpose: a provider module imports `pushd.config.types`
while `settings` imports the provider to compose its section."""
