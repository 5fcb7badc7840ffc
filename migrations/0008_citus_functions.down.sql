-- Back to 0007's schema: the two functions go (on Citus, from the workers too).
DROP FUNCTION IF EXISTS par_store_consume(text, text, boolean, boolean, text);
DROP FUNCTION IF EXISTS par_store_insert(text, timestamptz, text, text);
