import { createContext, useContext } from 'react';
import type { Right, Session } from './api.ts';

export interface SessionContextValue {
  session: Session;
  can: (right: Right) => boolean;
  signOut: () => void;
}

export const SessionContext = createContext<SessionContextValue | undefined>(undefined);

export function useSession(): SessionContextValue {
  const v = useContext(SessionContext);
  if (v === undefined) throw new Error('useSession outside the signed-in app');
  return v;
}
