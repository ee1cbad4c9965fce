-- dev/roles.sql — the roles and databases of the dev clusters, run by psql as superuser
-- postgres on the primary: by dev/cluster.sh when it creates its cluster, and by Patroni's
-- post_bootstrap in dev/patroni.sh, so pgsplit's config.toml works on both unchanged apart
-- from the ports. Idempotent.
-- Superuser with a password, for tests over TCP (SCRAM).
SET password_encryption = 'scram-sha-256';
ALTER ROLE postgres WITH PASSWORD 'postgres';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') THEN
        CREATE ROLE replicator WITH REPLICATION LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
        CREATE ROLE app WITH LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_md5') THEN
        CREATE ROLE app_md5 WITH LOGIN;
    END IF;
END
$$;

-- app: SCRAM-SHA-256 verifier.
ALTER ROLE app WITH PASSWORD 'secret';
-- app_md5: the password is stored as an md5 hash, so pg_hba's md5 method does real md5.
SET password_encryption = 'md5';
ALTER ROLE app_md5 WITH PASSWORD 'secret';
RESET password_encryption;

-- pgsplit's monitor reads replication state as app.
GRANT pg_monitor TO app;

SELECT 'CREATE DATABASE app OWNER app'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app') \gexec
SELECT 'CREATE DATABASE bench OWNER app'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'bench') \gexec

GRANT CONNECT ON DATABASE app TO app_md5;
\connect app
GRANT ALL ON SCHEMA public TO app_md5;
-- Tables that app creates in app.public are usable by app_md5 too.
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT ALL ON TABLES TO app_md5;
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT ALL ON SEQUENCES TO app_md5;
