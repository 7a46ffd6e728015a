-- Migration 2: the state of chunked uploads to S3-compatible object
-- storage (storage::s3). One row per upload in progress; its parts, each
-- of the part size, were uploaded to the store's multipart upload and are
-- listed in s3_upload_parts; acknowledged bytes after the last part wait
-- in `tail`. `hash_state` is the running SHA-256 after `acked` bytes, so
-- any relay can continue the upload. A writer holds `lease` until
-- `lease_until` (one writer per upload, across relays).
CREATE TABLE s3_uploads (
    vault bytea NOT NULL,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    multipart_id text,
    acked bigint NOT NULL DEFAULT 0 CHECK (acked >= 0),
    parts integer NOT NULL DEFAULT 0 CHECK (parts >= 0),
    tail bytea NOT NULL DEFAULT '\x',
    hash_state bytea,
    complete boolean NOT NULL DEFAULT false,
    lease text,
    lease_until timestamptz,
    touched timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vault, hash)
);
CREATE INDEX s3_uploads_by_touched ON s3_uploads (touched);
CREATE TABLE s3_upload_parts (
    vault bytea NOT NULL,
    hash bytea NOT NULL,
    idx integer NOT NULL CHECK (idx >= 0),
    etag text NOT NULL,
    PRIMARY KEY (vault, hash, idx),
    FOREIGN KEY (vault, hash) REFERENCES s3_uploads (vault, hash) ON DELETE CASCADE
);
