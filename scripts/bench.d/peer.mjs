// The peer for scripts/bench: node oidc-provider issuing RFC 9068 JWT access tokens (ES256) to a
// client_credentials client through resource indicators, with an in-memory adapter.
// scripts/bench copies this file into target/bench-peer/ (where oidc-provider is installed) and
// runs `node peer.mjs PORT WORKERS`. WORKERS > 1 forks that many processes sharing the port
// (node:cluster), all signing with the same key, generated once here.
import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';

const port = Number(process.argv[2] || 3999);
const workers = Number(process.argv[3] || 1);
export const CLIENT_ID = 'bench-peer';
export const CLIENT_SECRET = 'bench-peer-secret-0123456789abcdef';

async function serve(jwk) {
  const { default: Provider } = await import('oidc-provider');
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'bench:read',
      // Only an ES256 key is configured, so the (unused) ID-token algorithm must match it.
      id_token_signed_response_alg: 'ES256',
    }],
    scopes: ['bench:read'],
    jwks: { keys: [jwk] },
    cookies: { keys: ['bench-cookie-key-0123456789abcdef'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:bench:api',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'bench:read',
          audience: 'urn:bench:api',
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
  });
  // No request logging; keep the default error listener quiet under load.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  await new Promise((resolve) => provider.listen(port, '127.0.0.1', resolve));
  console.error(`peer ${process.pid} listening on ${issuer}`);
}

if (cluster.isPrimary && workers > 1) {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-peer-es256', alg: 'ES256', use: 'sig' };
  for (let i = 0; i < workers; i++) cluster.fork({ BENCH_PEER_JWK: JSON.stringify(jwk) });
  const stop = () => { for (const w of Object.values(cluster.workers)) w.kill('SIGTERM'); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  cluster.on('exit', (w, code, sig) => { if (sig !== 'SIGTERM') console.error(`peer worker ${w.process.pid} exited ${code ?? sig}`); });
} else {
  // A worker whose primary is gone exits too.
  if (cluster.isWorker) process.on('disconnect', () => process.exit(0));
  let jwk;
  if (process.env.BENCH_PEER_JWK) {
    jwk = JSON.parse(process.env.BENCH_PEER_JWK);
  } else {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-peer-es256', alg: 'ES256', use: 'sig' };
  }
  await serve(jwk);
}
