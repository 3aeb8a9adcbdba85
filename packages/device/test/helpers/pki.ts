import { createTestPki, issueDeviceCert, type TestPki } from '../../../server/test/helpers/pki.ts';

export type { TestPki };
export { issueDeviceCert };

let shared: Promise<TestPki> | undefined;

/** One throwaway CA and server certificate (localhost, 127.0.0.1) per test process. */
export function testPki(): Promise<TestPki> {
  shared ??= createTestPki();
  return shared;
}

/** TLS material for the fake servers. */
export async function serverTls(): Promise<{ cert: string; key: string; ca: string }> {
  const pki = await testPki();
  return { cert: pki.server.certPem, key: pki.server.keyPem, ca: pki.ca.certPem };
}
