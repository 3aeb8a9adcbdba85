import type {
  EnrollmentGroup,
  HubMove,
  IndividualEnrollment,
  ProvisioningInstance,
  RegistrationOperation,
  RegistrationRecord,
} from '../provisioning/model.ts';
import type { WriteResult } from './ports.ts';

/**
 * Store port of the provisioning (DPS) role: instances with their policies and linked hubs, individual enrollments,
 * enrollment groups, registration records and registration operations.
 *
 * Conventions (shared with the hub store port):
 * - Every row belongs to one instance, named by `instance` (the instance name).
 * - Registration ids and enrollment group ids are case-insensitive: the adapter keys rows by the lower-cased id and
 *   keeps the id as given inside the document. Callers pass ids in any case.
 * - Methods are named for intents and report expected outcomes as values ('ok' | 'not-found' |
 *   'precondition-failed' | 'exists'); they throw only for unexpected failures (the database is gone...).
 * - Writes that replace or delete carry the etag (or version) the caller read; `'*'` matches any stored etag.
 * - Lists are keyset-paged in binary order of the lower-cased key: pass `next` back as `after`. `next` is set only
 *   when more rows follow.
 */
export type CreateResult = 'ok' | 'exists';

export interface Page<T> {
  items: T[];
  /** Set only when more rows follow: pass it as `after` to continue. */
  next: string | undefined;
}

export interface PageRequest {
  /** Exclusive lower bound: the `next` of the previous page. */
  after?: string;
  /** 1..1000. */
  limit: number;
}

/** An etag to compare with the stored one; `'*'` (or undefined, where allowed) matches anything. */
export type ExpectedEtag = string;

/** How a registration record write relates to what is stored. */
export type RecordExpectation =
  /** Only when no record exists. */
  | { kind: 'absent' }
  /** Only when the stored record has this etag. */
  | { kind: 'etag'; etag: string }
  /** Unconditionally (create or replace). */
  | { kind: 'any' };

/** What a register request reads about one registration id (one round trip; see getRegistrationContext). */
export interface RegistrationContext {
  record: RegistrationRecord | undefined;
  /** The individual enrollment with this registration id. */
  individualEnrollment: IndividualEnrollment | undefined;
  /** The operation of this registration id whose status is `assigning`. */
  inFlightOperation: RegistrationOperation | undefined;
}

/** A registration record to write with an operation, in the same transaction. */
export interface RecordWrite {
  record: RegistrationRecord;
  expect: RecordExpectation;
}

/** Narrow read port for the device hot path (register, operation status polls). */
export interface ProvisioningReadStore {
  getInstance(name: string): Promise<ProvisioningInstance | undefined>;
  getInstanceByIdScope(idScope: string): Promise<ProvisioningInstance | undefined>;
  getIndividualEnrollment(instance: string, registrationId: string): Promise<IndividualEnrollment | undefined>;
  getEnrollmentGroup(instance: string, enrollmentGroupId: string): Promise<EnrollmentGroup | undefined>;
  /** Groups of one attestation type, for matching a device against groups (at most a few hundred per instance). */
  listEnrollmentGroups(instance: string, page: PageRequest & { attestationType?: 'symmetricKey' | 'x509' }): Promise<Page<EnrollmentGroup>>;
  getRegistration(instance: string, registrationId: string): Promise<RegistrationRecord | undefined>;
  getOperation(instance: string, operationId: string): Promise<RegistrationOperation | undefined>;
  /** The operation of this registration id whose status is `assigning`, if any. */
  findInFlightOperation(instance: string, registrationId: string): Promise<RegistrationOperation | undefined>;
  /**
   * getRegistration, getIndividualEnrollment and findInFlightOperation of one registration id at once (one statement,
   * one round trip): what every register request needs.
   */
  getRegistrationContext(instance: string, registrationId: string): Promise<RegistrationContext>;
}

export interface ProvisioningStore extends ProvisioningReadStore {
  // ---- instances -------------------------------------------------------------------------------------------
  /** Inserts an instance. 'exists' (and nothing written) when the name or the id scope is taken. */
  createInstance(instance: ProvisioningInstance): Promise<CreateResult>;
  /** Replaces an instance (policies, linked hubs, host names, default policy) when its etag matches. */
  replaceInstance(instance: ProvisioningInstance, expectedEtag: ExpectedEtag): Promise<WriteResult>;
  listInstances(): Promise<ProvisioningInstance[]>;

  // ---- individual enrollments ------------------------------------------------------------------------------
  /** Inserts an enrollment. 'exists' (and nothing written) when the registration id is taken. */
  createIndividualEnrollment(instance: string, enrollment: IndividualEnrollment): Promise<CreateResult>;
  /** Replaces an enrollment when the stored etag equals `expectedEtag` ('*' matches any). */
  replaceIndividualEnrollment(instance: string, enrollment: IndividualEnrollment, expectedEtag: ExpectedEtag): Promise<WriteResult>;
  /**
   * Deletes an enrollment when the etag matches (undefined or '*' match any) and, in the same transaction, the
   * registration record that was made through it (a record made through a group under the same id is kept).
   */
  deleteIndividualEnrollment(instance: string, registrationId: string, expectedEtag?: ExpectedEtag): Promise<WriteResult>;
  listIndividualEnrollments(instance: string, page: PageRequest): Promise<Page<IndividualEnrollment>>;
  countIndividualEnrollments(instance: string): Promise<number>;

  // ---- enrollment groups -----------------------------------------------------------------------------------
  createEnrollmentGroup(instance: string, group: EnrollmentGroup): Promise<CreateResult>;
  replaceEnrollmentGroup(instance: string, group: EnrollmentGroup, expectedEtag: ExpectedEtag): Promise<WriteResult>;
  /** Deletes a group when the etag matches. Its registration records are kept (DPS behaviour). */
  deleteEnrollmentGroup(instance: string, enrollmentGroupId: string, expectedEtag?: ExpectedEtag): Promise<WriteResult>;
  /** Groups by attestation type, for the per-type quotas. */
  countEnrollmentGroups(instance: string): Promise<{ symmetricKey: number; x509: number }>;

  // ---- registration records --------------------------------------------------------------------------------
  /** Creates or replaces a registration record under the given expectation ('precondition-failed' otherwise). */
  putRegistration(instance: string, record: RegistrationRecord, expect: RecordExpectation): Promise<'ok' | 'precondition-failed'>;
  deleteRegistration(instance: string, registrationId: string, expectedEtag?: ExpectedEtag): Promise<WriteResult>;
  /** Records made through one enrollment group (orphans of a deleted group included). */
  listGroupRegistrations(instance: string, enrollmentGroupId: string, page: PageRequest): Promise<Page<RegistrationRecord>>;
  countRegistrations(instance: string): Promise<number>;

  // ---- registration operations -----------------------------------------------------------------------------
  /**
   * Inserts an operation. 'exists' (nothing written) when the operation id is taken or when the new operation is
   * `assigning` while another operation of the same registration id is still `assigning`.
   */
  createOperation(instance: string, operation: RegistrationOperation): Promise<CreateResult>;
  /**
   * Inserts a finished (not `assigning`) operation and writes its registration record in one transaction: the single
   * write of an assignment that ended before its operation had to be stored as `assigning`. 'exists' when the
   * operation id is taken or when an operation of the same registration id is `assigning` (someone else is on it);
   * 'precondition-failed' when the record expectation does not hold. Nothing is written unless every condition holds.
   */
  createOperation(instance: string, operation: RegistrationOperation, registration: RecordWrite): Promise<CreateResult | 'precondition-failed'>;
  /**
   * Compare-and-set on the operation version: writes `operation` (whose `version` must be expectedVersion + 1) when
   * the stored version equals `expectedVersion`. With `registration`, the record is written in the same
   * transaction, and nothing is written unless both conditions hold.
   */
  updateOperation(
    instance: string,
    operation: RegistrationOperation,
    expectedVersion: number,
    registration?: RecordWrite,
  ): Promise<WriteResult>;
  /** `assigning` operations last updated before `updatedBefore` (ISO time), oldest first: work to resume. */
  listStaleOperations(instance: string, updatedBefore: string, limit: number): Promise<RegistrationOperation[]>;
  /** Deletes finished (not `assigning`) operations last updated before `updatedBefore`. Returns how many. */
  purgeFinishedOperations(instance: string, updatedBefore: string): Promise<number>;

  // ---- hub moves (durable reprovisioning jobs, model.ts HubMove) -------------------------------------------
  /**
   * Starts a move: inserts it and writes the registration record (status `assigning`) in one transaction. 'exists'
   * when the registration id already has a move; 'precondition-failed' when the record expectation does not hold.
   */
  createHubMove(instance: string, move: HubMove, registration: RecordWrite): Promise<CreateResult | 'precondition-failed'>;
  getHubMove(instance: string, registrationId: string): Promise<HubMove | undefined>;
  /** Compare-and-set on the move's version (`move.version` must be expectedVersion + 1). */
  updateHubMove(instance: string, move: HubMove, expectedVersion: number): Promise<WriteResult>;
  /**
   * Ends a move in one transaction: deletes it (at `expectedVersion`), writes its operation when given (compare-and-set
   * on the operation version) and the registration record. Nothing is written unless every condition holds.
   */
  finishHubMove(
    instance: string,
    registrationId: string,
    expectedVersion: number,
    operation: { operation: RegistrationOperation; expectedVersion: number } | undefined,
    registration: RecordWrite,
  ): Promise<WriteResult>;
  /** Moves to run: those owned by `owner`, or whose lease ended before `leaseBefore` (ISO), oldest lease first. */
  listHubMoves(instance: string, filter: { owner?: string; leaseBefore?: string; limit: number }): Promise<HubMove[]>;
  countHubMoves(instance: string): Promise<number>;
}
