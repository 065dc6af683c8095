// A real OpenID provider for pedm's end-to-end tests: panva/oidc-provider (certified), wrapped
// so a test can drive it without a human. TEST ONLY: the /admin routes below have no
// authentication and can mint tokens; never run this anywhere but a test's loopback.
//
// Usage: node idp.mjs   (configuration from the environment)
//   IDP_PORT     loopback port to listen on (0 = any; the chosen one is printed)
//   IDP_CONFIG   JSON: { "clients": [oidc-provider client metadata...],
//                        "accounts": { "<sub>": { "email": "...", "groups": [...], ... } } }
// Prints one line `listening <issuer>` on stdout when ready.
//
// Non-interactive login: the interaction route logs in the account named by
// `POST /admin/login-as {"account": "<sub>"}` and consents to everything asked, so following
// the authorisation URL's redirects with a cookie jar is a whole browser login.
//
// Admin routes (JSON bodies):
//   POST /admin/login-as   {account}              who the next interactions log in as
//   POST /admin/account    {account, claims?, disabled?}  add/replace claims, (dis)able
//   POST /admin/rotate     {}                     new signing key; the old one is unpublished
//   POST /admin/tamper     {mode, claims?, header?}   the NEXT token response's id_token is
//        re-signed with claims merged over the real ones (mode "claims"), signed with
//        alg none (mode "none"), HMAC-signed with `secret` (mode "hs256"), or replaced by the
//        previous id_token issued (mode "replay")
//   POST /admin/mint       {claims, ttl?}          an ID token signed with the current key
//                                                 (a CI issuer's workload token)
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const port = Number(process.env.IDP_PORT || 0);
const config = JSON.parse(process.env.IDP_CONFIG || '{}');
const accounts = config.accounts || {};
const disabled = new Set();
let loginAs = Object.keys(accounts)[0];
let tamper = null;
let lastIdToken = null;

// One store for every Provider instance: rotating the key builds a new instance, and the
// sessions, grants and refresh tokens issued before must survive it (as at a real IdP).
const store = new Map();
const grantIndex = new Map();
class SharedAdapter {
  constructor(name) {
    this.name = name;
  }
  key(id) {
    return `${this.name}:${id}`;
  }
  async upsert(id, payload, expiresIn) {
    const exp = expiresIn ? Date.now() + expiresIn * 1000 : undefined;
    store.set(this.key(id), { payload, exp });
    if (payload.grantId) {
      const ids = grantIndex.get(payload.grantId) || [];
      ids.push(this.key(id));
      grantIndex.set(payload.grantId, ids);
    }
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: { ref: id }, exp });
    if (payload.uid) store.set(`uid:${this.name}:${payload.uid}`, { payload: { ref: id }, exp });
  }
  async find(id) {
    const e = store.get(this.key(id));
    if (!e || (e.exp && e.exp < Date.now())) return undefined;
    return e.payload;
  }
  async findByUserCode(userCode) {
    const e = store.get(`userCode:${userCode}`);
    return e ? this.find(e.payload.ref) : undefined;
  }
  async findByUid(uid) {
    const e = store.get(`uid:${this.name}:${uid}`);
    return e ? this.find(e.payload.ref) : undefined;
  }
  async consume(id) {
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    store.delete(this.key(id));
  }
  async revokeByGrantId(grantId) {
    for (const k of grantIndex.get(grantId) || []) store.delete(k);
    grantIndex.delete(grantId);
  }
}

async function newKey(kid) {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

let keyNo = 1;
let signingKey = await newKey(`k${keyNo}`);
let provider;
let issuer;

function build() {
  const p = new Provider(issuer, {
    clients: config.clients || [],
    adapter: SharedAdapter,
    jwks: { keys: [signingKey] },
    cookies: { keys: ['pedm-test-idp-cookie-key'] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    findAccount: async (_ctx, sub) => {
      if (!accounts[sub] || disabled.has(sub)) return undefined;
      return {
        accountId: sub,
        claims: async () => ({ sub, email_verified: true, ...accounts[sub] }),
      };
    },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
    },
    pkce: { required: () => false },
    issueRefreshToken: async (_ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') && code.scopes.has('openid'),
    ttl: { IdToken: 300, AccessToken: 300, RefreshToken: 3600, Session: 3600, Grant: 3600 },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  p.proxy = false;
  p.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.method === 'POST' && ctx.body && ctx.body.id_token) {
      const real = ctx.body.id_token;
      if (tamper) {
        const t = tamper;
        tamper = null;
        ctx.body.id_token = await tampered(real, t);
      }
      lastIdToken = real;
    }
  });
  return p;
}

async function sign(claims, header = {}) {
  const key = await jose.importJWK(signingKey, 'RS256');
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid, typ: 'JWT', ...header })
    .sign(key);
}

async function tampered(real, t) {
  const claims = jose.decodeJwt(real);
  if (t.mode === 'replay') return lastIdToken || real;
  if (t.mode === 'hs256') {
    // HS/RS confusion: an HMAC "signature" keyed with a secret the client knows.
    return new jose.SignJWT({ ...claims, ...(t.claims || {}) })
      .setProtectedHeader({ alg: 'HS256', kid: signingKey.kid, typ: 'JWT' })
      .sign(new TextEncoder().encode(t.secret));
  }
  if (t.mode === 'none') {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, ...(t.claims || {}) })}.`;
  }
  return sign({ ...claims, ...(t.claims || {}) }, t.header || {});
}

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const s = Buffer.concat(chunks).toString();
  return s ? JSON.parse(s) : {};
}

function json(res, status, obj) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(obj));
}

async function admin(req, res, path) {
  const b = await body(req);
  switch (path) {
    case '/admin/login-as':
      if (!accounts[b.account]) return json(res, 404, { error: 'no such account' });
      loginAs = b.account;
      return json(res, 200, { ok: true });
    case '/admin/account':
      accounts[b.account] = { ...(accounts[b.account] || {}), ...(b.claims || {}) };
      if (b.disabled === true) disabled.add(b.account);
      if (b.disabled === false) disabled.delete(b.account);
      return json(res, 200, { account: accounts[b.account], disabled: disabled.has(b.account) });
    case '/admin/rotate':
      keyNo += 1;
      signingKey = await newKey(`k${keyNo}`);
      provider = build();
      return json(res, 200, { kid: signingKey.kid });
    case '/admin/tamper':
      tamper = b;
      return json(res, 200, { ok: true });
    case '/admin/mint': {
      const now = Math.floor(Date.now() / 1000);
      const ttl = b.ttl ?? 300;
      const token = await sign({
        iss: issuer,
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: crypto.randomUUID(),
        ...(b.claims || {}),
      });
      return json(res, 200, { token });
    }
    default:
      return json(res, 404, { error: 'unknown admin route' });
  }
}

// Logs in `loginAs` and grants every scope and claim asked for.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params } = details;
  if (prompt.name === 'login') {
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: loginAs } },
      { mergeWithLastSubmission: false },
    );
  }
  let grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
  const d = prompt.details || {};
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  if (d.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    if (path.startsWith('/admin/') && req.method === 'POST') return await admin(req, res, path);
    if (path.startsWith('/interaction/')) return await interaction(req, res);
    return provider.callback()(req, res);
  } catch (e) {
    console.error(e);
    if (!res.headersSent) json(res, 500, { error: String(e) });
  }
});

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  provider = build();
  console.log(`listening ${issuer}`);
});
