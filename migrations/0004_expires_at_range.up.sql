-- expires_at must be an instant the store can read back (par-store 0.3).
--
-- The store decodes expires_at into chrono's DateTime<Utc>, whose last representable instant
-- is 262142-12-31 23:59:59.999999 UTC (chrono 0.4.45: year 262142, which older releases
-- exceeded by one year); PostgreSQL's timestamptz goes on to year 294276. A row
-- beyond that bound (only an operator writing SQL can make one: the store writes chrono
-- values) could be consumed but not returned: consume_by_hash deleted it and failed. The bound
-- is exactly the decoder's, so every value the store can write passes and every value it
-- cannot read is refused. The lower end needs no check: PostgreSQL stops at 4714 BC, inside
-- chrono's range, and 0003 already refuses -infinity.
--
-- Rows beyond the bound now were never servable: they are made expired, so cleanup removes
-- them (as 0003 did with infinity). The constraint is added by an ALTER TABLE of its own, as
-- Citus requires for a distributed table.
UPDATE pushed_authorization_requests SET expires_at = now()
WHERE expires_at >= '262143-01-01 00:00:00+00';

ALTER TABLE pushed_authorization_requests
    ADD CONSTRAINT pushed_authorization_requests_expires_at_readable
        CHECK (expires_at < '262143-01-01 00:00:00+00');
