-- The schema refuses what the store cannot serve (par-store 0.2).
--
-- 1. expires_at must be finite. The store never writes 'infinity' or '-infinity', but an
--    operator could, and the store cannot read such a row (0.1 panicked decoding it, after
--    consume had already deleted it). Rows that hold one now were never servable: they are
--    made expired, so cleanup removes them, rather than becoming live for the first time.
-- 2. The key compares bytes: COLLATE "C". The hash needs no linguistic order, and an index
--    under a libc or ICU collation can be corrupted by an operating system's collation update
--    (an index built under the old order misses keys under the new). Byte comparison is also
--    cheaper. This rebuilds the primary key's index; a PAR table holds minutes of traffic.
UPDATE pushed_authorization_requests SET expires_at = now() WHERE NOT isfinite(expires_at);

ALTER TABLE pushed_authorization_requests
    ADD CONSTRAINT pushed_authorization_requests_expires_at_finite
        CHECK (isfinite(expires_at)),
    ALTER COLUMN reference_value_hash TYPE text COLLATE "C";
