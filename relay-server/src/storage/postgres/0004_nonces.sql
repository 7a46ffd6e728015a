-- Request nonces, shared by every relay over this database: a signed
-- request is accepted once across all of them. A row lives until its
-- request's timestamp can no longer pass the relay's skew check
-- (`expires`, Unix seconds); the relays delete expired rows.
CREATE TABLE relay_nonces (
    identity bytea NOT NULL,
    nonce bytea NOT NULL,
    expires bigint NOT NULL,
    PRIMARY KEY (identity, nonce)
);
CREATE INDEX relay_nonces_expires ON relay_nonces (expires);
