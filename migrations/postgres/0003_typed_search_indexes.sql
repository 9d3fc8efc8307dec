-- Full FHIR search (issue 3): typed index tables, one per search-parameter kind
-- (R4 search.html#ptypes), keyed by a surrogate resource key and a hashed parameter identity.
-- See docs/storage.md. Existing index rows are dropped: run `mediflow reindex` afterwards.

-- `resources` gains `rid`, a compact integer key the index rows point at (instead of
-- repeating res_type and id in every index row).
ALTER TABLE resources ADD COLUMN rid BIGSERIAL;
CREATE UNIQUE INDEX resources_rid ON resources (rid);

DROP TABLE search_token;
DROP TABLE search_reference;

-- In every table: rid = resources.rid (the owner index (rid, param) serves per-resource
-- probes: deletes on update, correlated EXISTS filters, _sort keys); param = 64-bit FNV-1a hash of "<scope>.<code>"
-- (scope is the resource type, or "Resource" for parameters defined on Resource and
-- DomainResource), so a parameter added later needs no migration; grp numbers the node of
-- a composite parameter that component rows came from (NULL for ordinary rows).
-- Text columns compared by range use COLLATE "C" so that prefix ranges follow byte order.

-- string (search.html#string): value is lower-cased with accents removed; exact is as written.
CREATE TABLE search_string (
    rid   BIGINT  NOT NULL,
    param BIGINT  NOT NULL,
    grp   INTEGER,
    value TEXT    COLLATE "C" NOT NULL,
    exact TEXT    NOT NULL
);
CREATE INDEX search_string_lookup ON search_string (param, value, rid);
CREATE INDEX search_string_owner ON search_string (rid, param);

-- token (search.html#token): system and code (either may be NULL).
CREATE TABLE search_token (
    rid    BIGINT NOT NULL,
    param  BIGINT NOT NULL,
    grp    INTEGER,
    system TEXT,
    code   TEXT
);
CREATE INDEX search_token_lookup ON search_token (param, code, system, rid);
CREATE INDEX search_token_owner ON search_token (rid, param);

-- date (search.html#date): the value's range [low, high) in microseconds since the epoch, UTC.
CREATE TABLE search_date (
    rid   BIGINT NOT NULL,
    param BIGINT NOT NULL,
    grp   INTEGER,
    low   BIGINT NOT NULL,
    high  BIGINT NOT NULL
);
CREATE INDEX search_date_low ON search_date (param, low, rid);
CREATE INDEX search_date_high ON search_date (param, high, rid);
CREATE INDEX search_date_owner ON search_date (rid, param);

-- number (search.html#number).
CREATE TABLE search_number (
    rid   BIGINT NOT NULL,
    param BIGINT NOT NULL,
    grp   INTEGER,
    value DOUBLE PRECISION NOT NULL
);
CREATE INDEX search_number_lookup ON search_number (param, value, rid);
CREATE INDEX search_number_owner ON search_number (rid, param);

-- quantity (search.html#quantity): as recorded, and in UCUM canonical units when convertible.
CREATE TABLE search_quantity (
    rid         BIGINT NOT NULL,
    param       BIGINT NOT NULL,
    grp         INTEGER,
    value       DOUBLE PRECISION NOT NULL,
    system      TEXT,
    code        TEXT,
    canon_value DOUBLE PRECISION,
    canon_code  TEXT
);
CREATE INDEX search_quantity_lookup ON search_quantity (param, code, value, rid);
CREATE INDEX search_quantity_canon ON search_quantity (param, canon_code, canon_value, rid);
CREATE INDEX search_quantity_owner ON search_quantity (rid, param);

-- uri (search.html#uri).
CREATE TABLE search_uri (
    rid   BIGINT NOT NULL,
    param BIGINT NOT NULL,
    grp   INTEGER,
    value TEXT COLLATE "C" NOT NULL
);
CREATE INDEX search_uri_lookup ON search_uri (param, value, rid);
CREATE INDEX search_uri_owner ON search_uri (rid, param);

-- reference (search.html#reference): target type and id for Type/id references; url for
-- absolute and canonical references.
CREATE TABLE search_reference (
    rid         BIGINT NOT NULL,
    param       BIGINT NOT NULL,
    grp         INTEGER,
    target_type TEXT,
    target_id   TEXT,
    url         TEXT
);
CREATE INDEX search_reference_lookup ON search_reference (param, target_id, target_type, rid);
CREATE INDEX search_reference_target ON search_reference (target_id, target_type);
CREATE INDEX search_reference_url ON search_reference (param, url);
CREATE INDEX search_reference_owner ON search_reference (rid, param);

-- Bookkeeping of the index: the definitions it was built with and reindex progress.
CREATE TABLE search_index_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO search_index_state (key, value)
    SELECT 'stale', '1' WHERE EXISTS (SELECT 1 FROM resources);
