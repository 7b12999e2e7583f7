// Signs in through Tessera's sign-in page in headless Chromium as a person would, then exchanges the
// code with PKCE; checks the page's security headers, that no CSP violation happens, that a wrong
// password is explained on the page, that a signed-in browser is not asked again, and leaves a
// screenshot of the page in docs/images/sign-in.png (and, to look at, a narrow-screen one and the
// wrong-password state in target/).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';

import { BASE, CSP, catchCallback, create, createUser, launch, signIn } from './lib.mjs';

const b64url = (buf) => buf.toString('base64url');
const verifier = b64url(randomBytes(32));
const challenge = b64url(createHash('sha256').update(verifier).digest());
const CALLBACK = 'http://127.0.0.1:47231/callback';

const user = await createUser('ada.lovelace', 'correct horse battery staple', ['keys:read']);
const client = await create('/v1/admin/clients', {
  name: 'Acme Dashboard',
  grant_types: ['authorization_code', 'refresh_token'],
  scopes: ['openid', 'profile', 'keys:read'],
  public: true,
  // A loopback redirect URI matches on any port (RFC 8252 §7.3).
  redirect_uris: ['http://127.0.0.1/callback'],
});

const authorize = new URL(`${BASE}/oauth/authorize`);
authorize.search = new URLSearchParams({
  response_type: 'code',
  client_id: client.client_id,
  redirect_uri: CALLBACK,
  scope: 'openid profile keys:read',
  state: 'browser-state',
  nonce: 'browser-nonce',
  code_challenge: challenge,
  code_challenge_method: 'S256',
}).toString();

const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const violations = [];
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
  });
  page.on('requestfailed', (r) => {
    if (r.url().startsWith(BASE)) violations.push(`failed: ${r.url()}`);
  });

  const res = await page.goto(authorize.href);
  assert.equal(res.status(), 200);
  const headers = res.headers();
  assert.equal(headers['content-security-policy'], CSP);
  assert.equal(headers['x-frame-options'], 'DENY');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByText('Acme Dashboard').waitFor();
  // The stylesheet (served by Tessera itself) applied: the button is not the browser's default grey.
  const background = await page.getByRole('button', { name: 'Sign in' }).evaluate((b) => getComputedStyle(b).backgroundColor);
  assert.notEqual(background, 'rgb(239, 239, 239)', 'the stylesheet loaded');

  mkdirSync('../../docs/images', { recursive: true });
  await page.screenshot({ path: '../../docs/images/sign-in.png' });
  await page.setViewportSize({ width: 390, height: 760 });
  mkdirSync('../../target', { recursive: true });
  await page.screenshot({ path: '../../target/sign-in-narrow.png' });
  await page.setViewportSize({ width: 1280, height: 860 });

  // A wrong password: told so on the page, the username kept, still on Tessera.
  await signIn(page, user.username, 'not the password');
  await page.getByRole('alert').filter({ hasText: 'Incorrect username or password.' }).waitFor();
  assert.equal(await page.getByLabel('Username').inputValue(), user.username);
  assert.ok(page.url().startsWith(BASE), page.url());
  await page.screenshot({ path: '../../target/sign-in-error.png' });

  // The right one: back at the app with a code, the state and the issuer (RFC 9207).
  const callback = catchCallback(page, 'http://127.0.0.1:47231/');
  await signIn(page, user.username, user.password);
  const back = new URL(await callback);
  assert.equal(back.searchParams.get('state'), 'browser-state');
  assert.equal(back.searchParams.get('iss'), BASE);
  const code = back.searchParams.get('code');
  assert.ok(code?.startsWith('tsc_'), back.href);

  const token = await fetch(`${BASE}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: CALLBACK,
      code_verifier: verifier,
      client_id: client.client_id,
    }),
  });
  const tokens = await token.json();
  assert.equal(token.status, 200, JSON.stringify(tokens));
  assert.ok(tokens.id_token && tokens.refresh_token && tokens.access_token);
  const idClaims = JSON.parse(Buffer.from(tokens.id_token.split('.')[1], 'base64url').toString());
  assert.equal(idClaims.nonce, 'browser-nonce');
  assert.equal(idClaims.aud, client.client_id);

  // The session cookie is HttpOnly and SameSite=Lax; the next visit goes straight back.
  const cookies = await context.cookies(BASE);
  const session = cookies.find((c) => c.name.endsWith('tessera_session'));
  assert.ok(session && session.httpOnly && session.sameSite === 'Lax', JSON.stringify(cookies));
  const again = catchCallback(page, 'http://127.0.0.1:47231/');
  await page.goto(authorize.href).catch(() => {});
  assert.ok(new URL(await again).searchParams.get('code'), 'no second sign-in');

  assert.deepEqual(violations, [], 'no CSP violation and no failed request');
  console.log('sign-in: Chromium signed in through the page; screenshot in docs/images/sign-in.png');
} finally {
  await browser.close();
}
