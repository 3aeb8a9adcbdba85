import { useId, useState } from 'react';
import { api, errorText, type Credentials, type Features, type Right, type Session } from '../api.ts';

interface WhoAmI {
  keyName: string | null;
  rights: Right[];
  idScope: string;
  features?: Partial<Features>;
}

export function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }): React.JSX.Element {
  const [mode, setMode] = useState<'key' | 'token'>('key');
  const [host, setHost] = useState(window.location.hostname);
  const [keyName, setKeyName] = useState('provisioningserviceowner');
  const [key, setKey] = useState('');
  const [token, setToken] = useState('');
  const [showKeys, setShowKeys] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const errId = useId();

  async function submit(e: React.FormEvent): Promise<void> {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    const creds: Credentials = mode === 'key' ? { host: host.trim(), keyName: keyName.trim(), key: key.trim() } : { host: host.trim(), token: token.trim() };
    try {
      const who = await api<WhoAmI>(creds, 'GET', '/homing/whoami');
      onSignedIn({
        ...creds,
        policyName: who.body.keyName ?? keyName,
        rights: who.body.rights,
        idScope: who.body.idScope,
        features: { deprovision: who.body.features?.deprovision === true, fleetJobs: who.body.features?.fleetJobs === true },
      });
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="signin" aria-labelledby="signin-title">
      <h1 id="signin-title">Sign in to Homing</h1>
      <p>Use a shared access policy of this provisioning service (key name and key), or paste a SAS token.</p>
      <div role="tablist" aria-label="Sign-in method" className="tabs">
        <button type="button" role="tab" aria-selected={mode === 'key'} onClick={() => setMode('key')}>
          Policy key
        </button>
        <button type="button" role="tab" aria-selected={mode === 'token'} onClick={() => setMode('token')}>
          SAS token
        </button>
      </div>
      <form onSubmit={(e) => void submit(e)} aria-describedby={error ? errId : undefined}>
        {mode === 'key' ? (
          <>
            <label>
              Key name
              <input name="keyName" value={keyName} onChange={(e) => setKeyName(e.target.value)} required autoComplete="username" />
            </label>
            <label>
              Key
              <input name="key" type={showKeys ? 'text' : 'password'} value={key} onChange={(e) => setKey(e.target.value)} required autoComplete="current-password" spellCheck={false} />
            </label>
            <label className="check">
              <input type="checkbox" checked={showKeys} onChange={(e) => setShowKeys(e.target.checked)} /> Show keys
            </label>
          </>
        ) : (
          <label>
            SAS token
            <textarea name="token" rows={4} value={token} onChange={(e) => setToken(e.target.value)} required spellCheck={false} placeholder="SharedAccessSignature sr=…&sig=…&se=…&skn=…" />
          </label>
        )}
        <label>
          Service host name
          <input name="host" value={host} onChange={(e) => setHost(e.target.value)} required />
        </label>
        {error !== undefined && (
          <p id={errId} role="alert" className="error">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </section>
  );
}
