import { constants } from 'node:crypto';

/**
 * TLS settings of the provisioning service's device listeners (DPS HTTPS and DPS MQTT), added to the server
 * certificate and key:
 *
 * - A client certificate is requested (never required, never verified by TLS): X.509 devices attest with it, and the
 *   attestation validates the chain itself (ADR 011).
 * - TLS session resumption is off (`SSL_OP_NO_TICKET`; without a session cache the TLS 1.3 tickets OpenSSL then
 *   sends are stateful ones nothing can resume). A resumed session keeps the client's leaf certificate but not the
 *   intermediates it sent, so a device attesting through an intermediate would be refused on a resumed connection
 *   (Node's https agent resumes by default). A stateless ticket also costs the server a serialization and a re-parse
 *   of the session with its peer certificates, two tickets per handshake: about 0.2 ms of CPU per X.509 handshake,
 *   some 30 µs without a client certificate. Devices register rarely, so a full handshake per connection costs them
 *   little.
 */
export function deviceListenerTls<T extends { cert: string; key: string; secureOptions?: number }>(tls: T): T & { requestCert: true; secureOptions: number } {
  return { ...tls, requestCert: true, secureOptions: (tls.secureOptions ?? 0) | constants.SSL_OP_NO_TICKET };
}
