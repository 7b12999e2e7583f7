-- pgbench ceiling for refresh rotation (scripts/bench): copies of the service's refresh tables
-- in schema bench_pgbench of the benchmark database, one family and one current token per
-- pgbench client (client_id 0..:clients-1), generation 0.
DROP SCHEMA IF EXISTS bench_pgbench CASCADE;
CREATE SCHEMA bench_pgbench;
CREATE TABLE bench_pgbench.refresh_families (LIKE public.refresh_families INCLUDING ALL);
CREATE TABLE bench_pgbench.refresh_tokens (LIKE public.refresh_tokens INCLUDING ALL);
ALTER TABLE bench_pgbench.refresh_tokens
    ADD FOREIGN KEY (family_id) REFERENCES bench_pgbench.refresh_families (id) ON DELETE CASCADE;
INSERT INTO bench_pgbench.refresh_families (id, client_id, user_id, created_at, absolute_expires_at)
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'bench-refresh', gen_random_uuid(),
       now(), now() + interval '30 days'
FROM generate_series(0, :clients - 1) AS i;
INSERT INTO bench_pgbench.refresh_tokens (token_hash, family_id, generation, scopes, issued_at, expires_at)
SELECT sha256(convert_to(i || '/0', 'UTF8')), ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       0, '{bench:read}', now(), now() + interval '14 days'
FROM generate_series(0, :clients - 1) AS i;
ANALYZE bench_pgbench.refresh_families;
ANALYZE bench_pgbench.refresh_tokens;
