DROP TABLE IF EXISTS pushed_authorization_requests;
