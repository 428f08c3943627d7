"""What the SQLite and PostgreSQL backends share, area by area: SQL text, row <-> record
mapping, and the methods that are one plain statement (a mixin per area over the
primitives of `engine.SqlEngine`). `common` holds what every area's SQL uses.

SQL is written once with PostgreSQL's `$1` placeholders; `common.sqlite_placeholders`
turns them into SQLite's equivalent `?1`. Rows are read by position, in the order of
each area's `*_COLUMNS`, which every SELECT and RETURNING of that area uses.
"""
