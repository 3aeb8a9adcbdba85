import { systemClock, systemIds, type Clock, type IdSource } from '../../../core/clock.ts';
import { sameRegistrationId } from '../../../core/registration-id.ts';
import type { Logger } from '../../../observability/logger.ts';
import type { DeviceCredential } from '../../../provisioning/registration.ts';
import { CONNACK } from '../errors.ts';
import type { ConnectOutcome, ConnectRequest, MqttLink, MqttRealm } from '../realm.ts';
import type { DpsMqttRuntime, DpsRealmContext } from './routes.ts';
import { DpsDeviceSession } from './session.ts';
import { looksLikeDpsUsername, parseDpsUsername } from './topics.ts';

export type { DpsMqttRuntime } from './routes.ts';

export interface DpsRealmOptions {
  /** For unexpected errors (logged with a tracking id, never with payloads or credentials). */
  logger: Logger;
  /**
   * How long a register or poll waits for its assignment before answering 202 `assigning` (ms). An assignment that
   * ends in time is answered 200 with its final status, saving the device a poll. 0: always 202 while assigning.
   * Default 100 (as the HTTPS transport).
   */
  responseBudgetMs?: number;
  /** Told of every answer sent (id scope, status), e.g. to count 429s next to the HTTPS device API's. */
  onAnswer?: (idScope: string, status: number) => void;
  /** Largest request payload, bytes (DPS: 96 KB, the default). Larger payloads are answered 413. */
  maxPayloadBytes?: number;
  /** `retry-after` of a 5xx answer without its own (seconds). Default 5. */
  serverErrorRetryAfterSeconds?: number;
  /**
   * Turns a CONNECT into the credential given to the use cases, or `undefined` to refuse it (CONNACK 5). Default
   * `defaultDpsCredential`. This is where X.509 attestation plugs in.
   */
  credential?: (req: ConnectRequest) => DeviceCredential | undefined;
  clock?: Clock;
  ids?: IdSource;
  /** Realm name in logs. Default `dps`. */
  name?: string;
}

export const DPS_MAX_PAYLOAD_BYTES = 96 * 1024;

/** Longest password kept for a connection: a DPS SAS is about 200 characters. Longer ones are refused (CONNACK 4). */
const MAX_PASSWORD_BYTES = 4096;

const defaultIds: IdSource = systemIds();

/**
 * The credential a DPS CONNECT presents:
 * - a password: the DPS SAS token (`SharedAccessSignature sr={idScope}/registrations/{id}&sig=..&se=..&skn=registration`),
 *   passed as `{ kind: 'sas', authorization }`; its signature is checked by the use cases on every request;
 * - no password but a TLS client certificate: X.509 attestation, `{ kind: 'x509', chain }` with the chain as sent
 *   (leaf first); the listener requests client certificates and the use cases validate the chain, not TLS;
 * - neither: nothing can ever succeed, refused at CONNECT.
 */
export function defaultDpsCredential(req: ConnectRequest): DeviceCredential | undefined {
  if (req.password !== undefined && req.password.length > 0) return { kind: 'sas', authorization: req.password.toString('utf8') };
  const chain = req.peerChain();
  return chain.length > 0 ? { kind: 'x509', chain } : undefined;
}

/**
 * The DPS device runtime over MQTT (protocol-device.md §B, dps-behavior.md §2.9) as a realm of the MQTT listener.
 *
 * CONNECT: the realm claims usernames `{idScope}/registrations/{registrationId}/...`. It refuses, with the SDK's
 * view of each refusal being a plain `Error("Connection refused: ...")`:
 * - a username without the `api-version` part: CONNACK 4 (bad username or password);
 * - a password over 4 KiB: CONNACK 4;
 * - a clientId that is not the registration id (case-insensitive): CONNACK 2 (identifier rejected);
 * - no password and no client certificate: CONNACK 5 (not authorized).
 * Everything else is accepted without a store read: the SAS signature, the id scope and the enrollment are checked by
 * the use cases on each request, and a failure is answered `$dps/registrations/res/401/?$rid=..` (the SDK's
 * `UnauthorizedError`), as Azure DPS does (a connection with a wrong key is accepted, the register is answered 401).
 * The same 401 answers an unknown id scope, so a stranger learns nothing at CONNECT. CleanSession=0 is accepted and
 * ignored (there is no session state).
 *
 * After CONNACK: SUBSCRIBE `$dps/registrations/res/#` is granted min(QoS, 1), other filters 128; UNSUBSCRIBE is
 * always acknowledged; requests are handled by the handlers in handlers/ (see session.ts for the rules).
 */
export function createDpsRealm(registration: DpsMqttRuntime, opts: DpsRealmOptions): MqttRealm {
  const ctx: DpsRealmContext = {
    registration,
    log: opts.logger,
    clock: opts.clock ?? systemClock,
    ids: opts.ids ?? defaultIds,
    responseBudgetMs: Math.max(0, opts.responseBudgetMs ?? 100),
    maxPayloadBytes: opts.maxPayloadBytes ?? DPS_MAX_PAYLOAD_BYTES,
    serverErrorRetryAfterSeconds: Math.max(1, Math.ceil(opts.serverErrorRetryAfterSeconds ?? 5)),
    onAnswer: opts.onAnswer,
  };
  const credentialOf = opts.credential ?? defaultDpsCredential;

  return {
    name: opts.name ?? 'dps',

    claims(req: ConnectRequest): boolean {
      return looksLikeDpsUsername(req.username);
    },

    connect(req: ConnectRequest, link: MqttLink): Promise<ConnectOutcome> {
      const parsed = parseDpsUsername(req.username ?? '');
      if (!parsed) return refuse(CONNACK.badUsernameOrPassword, 'malformed DPS username');
      if (!sameRegistrationId(req.clientId, parsed.registrationId)) return refuse(CONNACK.identifierRejected, 'clientId differs from the registration id');
      if (req.password !== undefined && req.password.length > MAX_PASSWORD_BYTES) return refuse(CONNACK.badUsernameOrPassword, 'password too long');
      const credential = credentialOf(req);
      if (credential === undefined) return refuse(CONNACK.notAuthorized, 'no credentials');
      const session = new DpsDeviceSession(parsed.idScope, parsed.registrationId, credential, link, ctx, req.remoteAddress);
      return Promise.resolve({ ok: true, session, sessionPresent: false });
    },
  };
}

function refuse(returnCode: 2 | 4 | 5, reason: string): Promise<ConnectOutcome> {
  return Promise.resolve({ ok: false, returnCode, reason });
}
