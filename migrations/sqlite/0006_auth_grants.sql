-- SMART App Launch grants (issue 5), sqlite flavour. See server/src/storage/grants.rs.
-- One table for every short- or long-lived secret the authorization server hands out and
-- later redeems, each stored by the SHA-256 of its value (never the value itself):
--   login    a signed-in user between the login page and the patient picker (10 minutes)
--   code     an authorization code (RFC 6749 §4.1.2: single use, 60 seconds)
--   refresh  a refresh token (RFC 6749 §6; single use, rotated at each use)
--   launch   an EHR launch context (SMART App Launch 2.0 § EHR launch, 5 minutes)
--   access   the jti of an access token issued from a grant (so that a replayed code or
--            refresh token can revoke it, RFC 6749 §4.1.2, OAuth 2.0 Security BCP §4.14)
-- A family ties a code to every token issued from it and from its refresh tokens.
CREATE TABLE auth_grants (
    token_hash TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    family     TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    data       TEXT    NOT NULL,      -- JSON: user, scope, launch context, PKCE challenge ...
    exp        INTEGER NOT NULL,
    used_at    INTEGER,                    -- set when a single-use grant is redeemed
    revoked    INTEGER NOT NULL DEFAULT 0  -- 1 once its family was revoked
);
CREATE INDEX auth_grants_family ON auth_grants (family);
CREATE INDEX auth_grants_exp ON auth_grants (exp);
