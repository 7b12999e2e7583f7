// Shared by the browser tests: the Tessera under test (TESSERA_URL, started by scripts/browser-test
// with TESSERA_BOOTSTRAP_ADMIN_SECRET=ADMIN_SECRET), its admin API, and Debian's Chromium.
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const BASE = process.env.TESSERA_URL ?? assert.fail('TESSERA_URL is not set');
const ADMIN_SECRET = process.env.ADMIN_SECRET ?? assert.fail('ADMIN_SECRET is not set');

export const CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

let adminToken;

/** An access token of the bootstrap admin client (client credentials). */
async function admin() {
  if (!adminToken) {
    const res = await fetch(`${BASE}/oauth/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`admin:${ADMIN_SECRET}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    assert.equal(res.status, 200, 'the bootstrap admin gets a token');
    adminToken = (await res.json()).access_token;
  }
  return adminToken;
}

/** POST `body` as JSON to the admin API; returns the created object. */
export async function create(path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await admin()}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 201, `POST ${path}: ${JSON.stringify(json)}`);
  return json;
}

/** A user with a password, and the password. */
export async function createUser(username, password, scopes = []) {
  await create('/v1/admin/users', { username, password, scopes });
  return { username, password };
}

/** Headless Debian Chromium. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking'],
  });
}

/**
 * Lets `page` reach `callbackPrefix` (the client's redirect URI, where nothing listens) and
 * resolves with the first URL it is sent to there, answering it with a small page.
 */
export async function catchCallback(page, callbackPrefix) {
  let resolve;
  const caught = new Promise((r) => (resolve = r));
  await page.route((url) => url.href.startsWith(callbackPrefix), async (route) => {
    resolve(route.request().url());
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>Back at the app</title>' });
  });
  return caught;
}

/** Signs in on Tessera's page as a person would: by the fields' labels and the button's name. */
export async function signIn(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}
