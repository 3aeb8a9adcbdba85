import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import { issueCertificate, type IssuedCert } from '../../../src/transport/tls/pki.ts';
import { peerCertificates, peerChain } from '../../../src/transport/tls/peer-chain.ts';

interface Seen {
  protocol: string | null;
  first: Buffer[];
  second: Buffer[];
  parsed: readonly X509Certificate[] | undefined;
  parsedAgain: readonly X509Certificate[] | undefined;
}

/** One TLS connection with a client chain; what the server reads from the socket, twice (a keep-alive connection). */
async function readPeer(pki: { root: IssuedCert; server: IssuedCert }, clientChain: IssuedCert[] | undefined, maxVersion: 'TLSv1.2' | 'TLSv1.3'): Promise<Seen> {
  const server = createServer({ cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true, rejectUnauthorized: false, maxVersion });
  const seen = new Promise<Seen>((resolve) => {
    server.once('secureConnection', (s: TLSSocket) => {
      const parsed = peerCertificates(s);
      const first = peerChain(s);
      const second = peerChain(s);
      resolve({ protocol: s.getProtocol(), first, second, parsed, parsedAgain: peerCertificates(s) });
      s.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const leaf = clientChain?.[0];
  const client = connect({
    host: '127.0.0.1',
    port,
    ca: pki.root.certPem,
    servername: 'localhost',
    ...(leaf === undefined ? {} : { key: leaf.keyPem, cert: clientChain!.map((c) => c.certPem.trim()).join('\n') }),
  });
  client.on('error', () => undefined);
  client.resume();
  try {
    return await seen;
  } finally {
    client.destroy();
    server.close();
  }
}

describe('peer chain of a TLS client', async () => {
  const root = await issueCertificate({ commonName: 'Peer Chain Root', isCA: true, pathLength: 1 });
  const intermediate = await issueCertificate({ commonName: 'Peer Chain Intermediate', isCA: true, pathLength: 0, issuer: root });
  const leaf = await issueCertificate({ commonName: 'device-1', issuer: intermediate, usages: ['client'] });
  const server = await issueCertificate({ commonName: 'localhost', sans: ['localhost', '127.0.0.1'], issuer: root, usages: ['server'] });
  const pki = { root, server };
  const der = (c: IssuedCert) => new X509Certificate(c.certPem).raw;

  it('TLS 1.3: the leaf and the intermediate as sent, parsed, the same on every read of the connection', async () => {
    const s = await readPeer(pki, [leaf, intermediate], 'TLSv1.3');
    assert.equal(s.protocol, 'TLSv1.3');
    assert.deepEqual(s.first, [der(leaf), der(intermediate)]);
    // Node links the issuers only on the first getPeerX509Certificate(): a second request on the connection must see them too.
    assert.deepEqual(s.second, s.first);
    assert.ok(s.parsed);
    assert.equal(s.parsedAgain, s.parsed);
    assert.deepEqual(s.parsed.map((c) => c.raw), s.first);
    assert.equal(s.parsed[0]?.subject, 'CN=device-1');
  });

  it('TLS 1.2: the same chain through getPeerCertificate(true), no parsed certificates', async () => {
    const s = await readPeer(pki, [leaf, intermediate], 'TLSv1.2');
    assert.equal(s.protocol, 'TLSv1.2');
    assert.equal(s.parsed, undefined);
    assert.deepEqual(s.first, [der(leaf), der(intermediate)]);
    assert.deepEqual(s.second, s.first);
  });

  it('no client certificate: empty', async () => {
    const s13 = await readPeer(pki, undefined, 'TLSv1.3');
    assert.deepEqual(s13.first, []);
    assert.deepEqual(s13.parsed, []);
    const s12 = await readPeer(pki, undefined, 'TLSv1.2');
    assert.deepEqual(s12.first, []);
  });

  it('not a TLS socket: empty, nothing parsed', () => {
    assert.deepEqual(peerChain(undefined), []);
    assert.deepEqual(peerChain({}), []);
    assert.equal(peerCertificates(null), undefined);
    assert.equal(peerCertificates({ getProtocol: () => 'TLSv1.3' }), undefined);
  });
});
