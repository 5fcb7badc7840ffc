-- Back to 0007's schema: the consumption function goes (on Citus, from the workers too).
DROP FUNCTION IF EXISTS par_store_consume(text, text, boolean, boolean, text);
