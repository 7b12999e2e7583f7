// An off-the-shelf OpenID Connect relying party (openid-client, on oauth4webapi) against Tessera:
// discovery from the issuer alone, the code flow with PKCE, state and nonce (the person signs in
// through the page in Chromium), ID-token validation against the JWKS, the RFC 9207 `iss` check,
// UserInfo, a refresh, and RP-initiated logout.
//
// Library defaults throughout, with one exception: `allowInsecureRequests`, because the Tessera
// under test listens on plain http on 127.0.0.1 and openid-client refuses non-https URLs otherwise.
import assert from 'node:assert/strict';

import * as oidc from 'openid-client';

import { BASE, catchCallback, create, createUser, launch, signIn } from './lib.mjs';

const CALLBACK = 'http://127.0.0.1:47232/callback';
const AFTER_LOGOUT = 'http://127.0.0.1:47232/signed-out';

const user = await createUser('grace.hopper', 'a long and unguessable passphrase', []);
const client = await create('/v1/admin/clients', {
  name: 'Compiler Console',
  grant_types: ['authorization_code', 'refresh_token'],
  scopes: ['openid', 'profile', 'offline_access'],
  redirect_uris: [CALLBACK],
  post_logout_redirect_uris: [AFTER_LOGOUT],
});

// Discovery: GET <issuer>/.well-known/openid-configuration, issuer checked against the URL.
const config = await oidc.discovery(new URL(BASE), client.client_id, client.client_secret, undefined, {
  execute: [oidc.allowInsecureRequests],
});
const meta = config.serverMetadata();
assert.equal(meta.issuer, BASE);
assert.ok(meta.supportsPKCE(), 'S256 is advertised');

const codeVerifier = oidc.randomPKCECodeVerifier();
const state = oidc.randomState();
const nonce = oidc.randomNonce();
const url = oidc.buildAuthorizationUrl(config, {
  redirect_uri: CALLBACK,
  scope: 'openid profile offline_access',
  code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: 'S256',
  state,
  nonce,
});

const browser = await launch();
let callback;
try {
  const page = await browser.newPage();
  const caught = catchCallback(page, 'http://127.0.0.1:47232/');
  await page.goto(url.href);
  await signIn(page, user.username, user.password);
  callback = new URL(await caught);
} finally {
  await browser.close();
}

// The library checks state, iss (RFC 9207), the code exchange, and the ID token: RS256 signature
// against the JWKS, iss, aud, exp, iat, nonce.
const tokens = await oidc.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: codeVerifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
const claims = tokens.claims();
assert.equal(claims.iss, BASE);
assert.equal(claims.aud, client.client_id);
assert.equal(claims.nonce, nonce);
assert.ok(claims.sub && claims.auth_time && claims.sid, JSON.stringify(claims));
assert.ok(tokens.refresh_token);

const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
assert.equal(info.preferred_username, user.username);

const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
assert.ok(refreshed.access_token && refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token);

// RP-initiated logout: the end-session URL the library builds sends the browser back with state.
const end = oidc.buildEndSessionUrl(config, {
  id_token_hint: tokens.id_token,
  post_logout_redirect_uri: AFTER_LOGOUT,
  state: 'bye',
});
const res = await fetch(end, { redirect: 'manual' });
assert.equal(res.status, 303);
assert.equal(res.headers.get('location'), `${AFTER_LOGOUT}?state=bye`);

console.log('openid-client: discovered Tessera and completed the code flow, UserInfo, refresh and logout');
