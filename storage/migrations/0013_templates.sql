-- 0013: notification templates (issue #13 point 4), operator-authored content rendered
-- per recipient (pushd/routing/templates.py). Not personal data: stored in clear.
--
-- * templates: one row per template id ever saved, holding the last version number
--   given. It stays when the template is deleted, so that a version number names one
--   content forever, even after a delete and a new PUT of the same id: nodes cache
--   compiled templates by (id, version) and must never serve an old content for it.
-- * template_versions: every version of a live template (a PUT adds one, old ones stay
--   readable); deleting a template deletes its versions. `variables` (declared
--   defaults) and `locales` (locale -> channel -> part -> source) are JSON text whose
--   meaning the renderer owns.

CREATE TABLE templates (
    id TEXT /*postgresql: COLLATE "C"*/ PRIMARY KEY,
    last_version INTEGER NOT NULL
);

CREATE TABLE template_versions (
    template_id TEXT /*postgresql: COLLATE "C"*/ NOT NULL
        REFERENCES templates (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    default_locale TEXT NOT NULL,
    variables TEXT NOT NULL,
    locales TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (template_id, version)
);
