-- One refresh rotation as the service runs it (src/tokens/refresh.rs): in one transaction, the
-- conditional UPDATE that spends the presented token (joined to its family, never
-- read-then-write), then the INSERT of its successor. Each pgbench client walks its own chain:
-- token N of client C is sha256('C/N'). Run with -M prepared (sqlx prepares too), -D gen=0 and
-- -D scopes={bench:read} (bound like the service binds them: pgbench would take a colon inside a
-- quoted literal for a variable). pgbench's prepared mode wants each variable once per
-- statement, hence the sub-select.
BEGIN;
UPDATE bench_pgbench.refresh_tokens t SET spent_at = now()
  FROM bench_pgbench.refresh_families f
 WHERE t.token_hash = sha256(convert_to((:client_id)::text || '/' || (:gen)::text, 'UTF8'))
   AND t.spent_at IS NULL AND t.family_id = f.id AND f.client_id = 'bench-refresh'
   AND f.revoked_at IS NULL AND t.expires_at > now() AND f.absolute_expires_at > now()
RETURNING t.family_id AS fam, t.generation + 1 AS next_gen \gset
INSERT INTO bench_pgbench.refresh_tokens (token_hash, family_id, generation, scopes, issued_at, expires_at)
SELECT sha256(convert_to(v.c || '/' || v.g, 'UTF8')), v.f, v.g, v.s, now(), now() + interval '14 days'
  FROM (SELECT (:client_id)::text AS c, (:next_gen)::int AS g, (:fam)::uuid AS f, (:scopes)::text[] AS s) AS v;
COMMIT;
\set gen :next_gen
