-- Reload tolerance, par-store 0.3 (ConsumePolicy::ReloadWithin, opt-in): the session binding
-- that consumed a request, so that the same browser session may consume it again within a
-- short window. NULL for every request consumed otherwise, and for every live one.
--
-- A consumption under a reload window keeps the request's parameters beside its marker
-- (0005's CHECK allows a consumed row with parameters); the first consumption after the
-- window clears them, and cleanup removes the row at expires_at in any case.
--
-- Written for Citus too: the ADD CONSTRAINT in an ALTER TABLE of its own.
ALTER TABLE pushed_authorization_requests ADD COLUMN consumed_by text;

-- The store's own bound (MAX_SESSION_BINDING_LEN, 128 bytes); the store refuses an empty
-- binding before it gets here.
ALTER TABLE pushed_authorization_requests
    ADD CONSTRAINT pushed_authorization_requests_consumed_by_length
        CHECK (octet_length(consumed_by) BETWEEN 1 AND 128);
