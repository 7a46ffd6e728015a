-- Migration 8: pairing slots (docs/format.md §3.8, decision 72), shared by
-- every relay instance behind a load balancer: one row per slot, the
-- joiner and the reveal each set once.
CREATE TABLE pairings (
    slot bytea PRIMARY KEY CHECK (octet_length(slot) = 32),
    opener bytea NOT NULL CHECK (octet_length(opener) = 32),
    commit bytea NOT NULL CHECK (octet_length(commit) = 32),
    expires_at bigint NOT NULL,
    joiner bytea CHECK (octet_length(joiner) = 32),
    joiner_nonce bytea CHECK (octet_length(joiner_nonce) = 32),
    person bytea CHECK (octet_length(person) = 32),
    opener_nonce bytea CHECK (octet_length(opener_nonce) = 32)
);
CREATE INDEX pairings_opener ON pairings (opener);
CREATE INDEX pairings_expiry ON pairings (expires_at);
