-- MediFlow storage, PostgreSQL flavour. See docs/storage.md for the design.
-- Every version of every resource: the FHIR history (R4 http.html#history).
CREATE TABLE resource_versions (
    seq          BIGSERIAL PRIMARY KEY,   -- global write order (system history, paging)
    res_type     TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version_id   BIGINT  NOT NULL,        -- meta.versionId: 1, 2, 3 ...
    last_updated BIGINT  NOT NULL,        -- meta.lastUpdated, microseconds since the Unix epoch, UTC
    method       TEXT    NOT NULL,        -- POST | PUT | DELETE: the interaction that made this version
    deleted      BOOLEAN NOT NULL DEFAULT FALSE,
    content      JSONB                    -- the resource, meta included; NULL for a delete
);
CREATE UNIQUE INDEX resource_versions_key ON resource_versions (res_type, id, version_id);
CREATE INDEX resource_versions_type_seq ON resource_versions (res_type, seq);
CREATE INDEX resource_versions_updated ON resource_versions (last_updated);

-- One row per resource: which version is current. Search joins index rows to it.
CREATE TABLE resources (
    res_type     TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version_id   BIGINT  NOT NULL,
    last_updated BIGINT  NOT NULL,
    deleted      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (res_type, id)
);
CREATE INDEX resources_type_updated ON resources (res_type, last_updated);

-- Token search index (R4 search.html#token), written in the same transaction as the resource.
CREATE TABLE search_token (
    res_type TEXT NOT NULL,
    id       TEXT NOT NULL,
    param    TEXT NOT NULL,
    system   TEXT,
    value    TEXT
);
CREATE INDEX search_token_lookup ON search_token (res_type, param, value, system);
CREATE INDEX search_token_owner ON search_token (res_type, id);

-- Reference search index (R4 search.html#reference): one row per reference a search
-- parameter extracts, split into target type and id.
CREATE TABLE search_reference (
    res_type    TEXT NOT NULL,
    id          TEXT NOT NULL,
    param       TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL
);
CREATE INDEX search_reference_lookup ON search_reference (param, target_id, target_type, res_type);
CREATE INDEX search_reference_owner ON search_reference (res_type, id);
