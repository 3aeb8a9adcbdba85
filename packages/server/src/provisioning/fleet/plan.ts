import { ALLOCATORS, allocationContext } from '../../core/allocation.ts';
import type { EnrollmentGroup, IndividualEnrollment, ProvisioningInstance, RegistrationRecord } from '../model.ts';
import type { PlannedMove } from './model.ts';

/**
 * A dry run for one assigned device: where allocation would put it if it re-registered now, with the pure
 * allocators (hashed and static are predictable; geoLatency depends on where the device connects from and custom on
 * a webhook, so they are `unknown`). An enrollment that never reprovisions keeps the device (`stay`).
 */
export function planMove(record: RegistrationRecord & { assignedHub: string; deviceId: string }, enrollment: IndividualEnrollment | EnrollmentGroup | undefined, instance: ProvisioningInstance): PlannedMove {
  const base = { registrationId: record.registrationId, deviceId: record.deviceId, fromHub: record.assignedHub };
  if (enrollment === undefined) return { ...base, outcome: 'fail', reason: 'the enrollment the device registered through no longer exists' };
  if (enrollment.provisioningStatus === 'disabled') return { ...base, outcome: 'fail', reason: 'the enrollment is disabled' };
  if (!enrollment.reprovisionPolicy.updateHubAssignment) return { ...base, toHub: record.assignedHub, outcome: 'stay', reason: 'the reprovision policy never moves the device' };
  const ctx = allocationContext(record.registrationId, enrollment, instance);
  if (ctx.policy === 'geoLatency' || ctx.policy === 'custom') return { ...base, outcome: 'unknown', reason: `the ${ctx.policy} policy cannot be predicted` };
  const decision = ALLOCATORS[ctx.policy](ctx);
  if (decision.kind === 'failed') return { ...base, outcome: 'fail', reason: decision.message };
  const same = decision.hub.name.toLowerCase() === record.assignedHub.toLowerCase();
  return { ...base, toHub: decision.hub.name, outcome: same ? 'stay' : 'move' };
}

/** Totals of a plan, by outcome and by target hub. */
export function summarizePlan(moves: readonly PlannedMove[]): { total: number; move: number; stay: number; unknown: number; fail: number; byHub: Record<string, number> } {
  const s = { total: moves.length, move: 0, stay: 0, unknown: 0, fail: 0, byHub: {} as Record<string, number> };
  for (const m of moves) {
    s[m.outcome]++;
    if (m.outcome === 'move' && m.toHub !== undefined) s.byHub[m.toHub] = (s.byHub[m.toHub] ?? 0) + 1;
  }
  return s;
}
