-- Security (issue 5), postgres flavour. See docs/storage.md and server/src/storage/auth.rs.
-- Times are Unix seconds. JSON is stored as TEXT on both backends (read whole, never queried).

-- Our ES256/ES384 signing keys (PKCS#8 PEM). The current key has retired_at NULL; a retired
-- key stays published in the JWKS until every token it signed has expired.
CREATE TABLE auth_signing_keys (
    kid        TEXT    PRIMARY KEY,   -- RFC 7638 JWK thumbprint
    alg        TEXT    NOT NULL,      -- ES256 | ES384
    pkcs8_pem  TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

-- OAuth clients: SMART Backend Services (kind 'backend', private_key_jwt with a JWKS inline
-- or by URL), and apps of the authorization-code flow ('public', 'confidential').
CREATE TABLE auth_clients (
    client_id     TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL DEFAULT '',
    kind          TEXT    NOT NULL,               -- backend | public | confidential
    jwks          TEXT,                           -- JWK Set JSON, or NULL with jwks_url
    jwks_url      TEXT,
    scopes        TEXT    NOT NULL,               -- the most this client may be granted
    redirect_uris TEXT    NOT NULL DEFAULT '[]',  -- JSON array of strings
    created_at    BIGINT NOT NULL
);

-- Users (hospital staff and patients), Argon2id password hashes (PHC strings).
CREATE TABLE auth_users (
    username      TEXT    PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,               -- ADMIN, DOCTOR, ... (hospital-model.md § Roles)
    fhir_user     TEXT,                           -- Practitioner/1, Patient/2
    failures      TEXT    NOT NULL DEFAULT '[]',  -- JSON array of recent failed login times
    locked_until  BIGINT,
    created_at    BIGINT NOT NULL
);

-- Client assertion ids seen, until they expire: a second use is a replay (SMART Backend
-- Services, RFC 7523 §3 item 7).
CREATE TABLE auth_jti (
    client_id TEXT    NOT NULL,
    jti       TEXT    NOT NULL,
    exp       BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX auth_jti_exp ON auth_jti (exp);

-- Revoked access tokens (RFC 7009), by jti, until they expire.
CREATE TABLE auth_revoked (
    jti TEXT    PRIMARY KEY,
    exp BIGINT NOT NULL
);
