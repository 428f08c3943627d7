-- 0012: notification categories defined through the API (issue #13, point 1).
--
-- One row per category. `definition` is JSON text whose meaning routing owns
-- (pushd/routing/categories.py: name, opt_out, per-channel defaults, plan, retention,
-- digest window); storage keeps it whole, like user_preferences.quiet_hours. Categories
-- defined in config.toml are not stored: the server reads them at start.

CREATE TABLE categories (
    slug TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    definition TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
