import { StrictMode, Suspense, lazy, useCallback, useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { loadSession, saveSession, type Right, type Session } from './api.ts';
import { SessionContext, type SessionContextValue } from './session.tsx';
import { href, useRoute } from './router.ts';
import { SignIn } from './pages/SignIn.tsx';
import './styles.css';

// One chunk per page: the sign-in page loads alone, the rest when first visited.
const Enrollments = lazy(() => import('./pages/Enrollments.tsx'));
const EnrollmentEditor = lazy(() => import('./pages/EnrollmentEditor.tsx'));
const Hubs = lazy(() => import('./pages/Hubs.tsx'));
const Registrations = lazy(() => import('./pages/Registrations.tsx'));
const Fleet = lazy(() => import('./pages/Fleet.tsx'));

const NAV: { id: string; label: string; to: string }[] = [
  { id: 'enrollments', label: 'Enrollments', to: href('enrollments', 'groups') },
  { id: 'hubs', label: 'Linked hubs', to: href('hubs') },
  { id: 'registrations', label: 'Registration records', to: href('registrations') },
  { id: 'fleet', label: 'Fleet', to: href('fleet') },
];

function Page(): React.JSX.Element {
  const route = useRoute();
  const [section = 'enrollments', kind, id] = route.path;
  if (section === 'enrollments') {
    const k = kind === 'individual' ? 'individual' : 'groups';
    if (id !== undefined) return <EnrollmentEditor kind={k} id={id === 'new' ? undefined : id} />;
    return <Enrollments kind={k} />;
  }
  if (section === 'hubs') return <Hubs />;
  if (section === 'registrations') return <Registrations group={route.query.get('group') ?? ''} />;
  if (section === 'fleet') return <Fleet />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        <a href={href('enrollments', 'groups')}>Go to enrollments</a>
      </p>
    </section>
  );
}

function Shell({ value }: { value: SessionContextValue }): React.JSX.Element {
  const route = useRoute();
  const current = route.path[0] ?? 'enrollments';
  const { session } = value;
  return (
    <SessionContext.Provider value={value}>
      <a className="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>
        Skip to content
      </a>
      <header className="top">
        <span className="brand">Homing</span>
        <nav aria-label="Main">
          <ul>
            {NAV.map((n) => (
              <li key={n.id}>
                <a href={n.to} aria-current={current === n.id ? 'page' : undefined}>
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          <span title={session.rights.join(', ')} data-testid="signed-in-as">
            {session.policyName} · {session.idScope}
          </span>
          <button type="button" onClick={value.signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<p role="status">Loading…</p>}>
          <Page />
        </Suspense>
      </main>
    </SessionContext.Provider>
  );
}

function App(): React.JSX.Element {
  const [session, setSession] = useState<Session | undefined>(loadSession);
  const signOut = useCallback(() => {
    saveSession(undefined);
    setSession(undefined);
  }, []);
  const value = useMemo<SessionContextValue | undefined>(
    () => (session === undefined ? undefined : { session, can: (r: Right) => session.rights.includes(r), signOut }),
    [session, signOut],
  );
  if (value === undefined) {
    return (
      <main id="main" className="signin-main">
        <SignIn
          onSignedIn={(s) => {
            saveSession(s);
            setSession(s);
            if (window.location.hash === '' || window.location.hash === '#/') window.location.hash = href('enrollments', 'groups');
          }}
        />
      </main>
    );
  }
  return <Shell value={value} />;
}

const el = document.getElementById('root');
if (el) {
  createRoot(el).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
