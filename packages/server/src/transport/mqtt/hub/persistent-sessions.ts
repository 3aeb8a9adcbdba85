import type { SessionState } from './session.ts';

/**
 * In-memory persistent sessions (MQTT clean=false) of one hub, keyed by client id. The official device SDK
 * connects with clean=false and, after a reconnect, re-subscribes methods and C2D but not the twin topics, so the
 * subscriptions must outlive the connection. Bounded: the oldest sessions are forgotten first.
 */
export class PersistentSessions {
  private readonly sessions = new Map<string, SessionState>();

  constructor(private readonly max: number) {}

  /**
   * The state for a new connection. clean=true drops any stored session and starts empty (not stored);
   * clean=false resumes the stored one (sessionPresent) or stores a new one.
   */
  open(clientId: string, clean: boolean): { state: SessionState; present: boolean } {
    if (clean) {
      this.sessions.delete(clientId);
      return { state: { flags: 0 }, present: false };
    }
    const existing = this.sessions.get(clientId);
    if (existing) return { state: existing, present: true };
    const state: SessionState = { flags: 0 };
    if (this.sessions.size >= this.max) {
      const oldest = this.sessions.keys().next();
      if (!oldest.done) this.sessions.delete(oldest.value);
    }
    this.sessions.set(clientId, state);
    return { state, present: false };
  }

  get size(): number {
    return this.sessions.size;
  }
}
