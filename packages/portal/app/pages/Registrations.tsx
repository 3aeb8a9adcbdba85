import { useCallback, useEffect, useState } from 'react';
import { Dialog } from '../components/Dialog.tsx';
import { ApiError, api, errorText } from '../api.ts';
import { useSession } from '../session.tsx';
import type { RegistrationRecord } from '../model.ts';
import { Messages } from '../components/Messages.tsx';

interface AdminPage {
  items: RegistrationRecord[];
  next?: string;
}

type Pending = { kind: 'delete' | 'deprovision'; record: RegistrationRecord } | undefined;

export default function Registrations({ group }: { group: string }): React.JSX.Element {
  const { session, can } = useSession();
  const writable = can('RegistrationStatusWrite');
  const [groupId, setGroupId] = useState(group);
  const [status, setStatus] = useState('');
  const [hub, setHub] = useState('');
  const [items, setItems] = useState<RegistrationRecord[]>([]);
  const [next, setNext] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [notice, setNotice] = useState<string | undefined>();
  const [loading, setLoading] = useState(false);
  const [pending, setPending] = useState<Pending>();

  useEffect(() => setGroupId(group), [group]);

  const readable = can('RegistrationStatusRead');
  const load = useCallback(
    async (cursor: string | undefined) => {
      if (!readable) return;
      setLoading(true);
      setError(undefined);
      try {
        let page: AdminPage;
        if (groupId.trim().length > 0 && status === '' && hub === '') {
          // Per group: the DPS service API's own query.
          const headers: Record<string, string> = { 'x-ms-max-item-count': '50' };
          if (cursor !== undefined) headers['x-ms-continuation'] = cursor;
          const r = await api<RegistrationRecord[]>(session, 'POST', `/registrations/${encodeURIComponent(groupId.trim())}/query`, { body: { query: '*' }, headers });
          page = { items: r.body, ...(r.headers.get('x-ms-continuation') ? { next: r.headers.get('x-ms-continuation') ?? '' } : {}) };
        } else {
          const q = new URLSearchParams({ limit: '50' });
          if (status !== '') q.set('status', status);
          if (hub.trim() !== '') q.set('hub', hub.trim());
          if (groupId.trim() !== '') q.set('group', groupId.trim());
          if (cursor !== undefined) q.set('after', cursor);
          page = (await api<AdminPage>(session, 'GET', `/homing/registrations?${q.toString()}`)).body;
        }
        setItems((old) => (cursor === undefined ? page.items : [...old, ...page.items]));
        setNext(page.next);
      } catch (e) {
        setError(errorText(e));
      } finally {
        setLoading(false);
      }
    },
    [session, groupId, status, hub, readable],
  );

  useEffect(() => {
    void load(undefined);
    // Filters apply on submit; the group from the URL loads at once.
  }, [session, group]);

  async function act(p: NonNullable<Pending>): Promise<void> {
    setPending(undefined);
    setError(undefined);
    setNotice(undefined);
    const id = p.record.registrationId;
    try {
      if (p.kind === 'delete') {
        await api(session, 'DELETE', `/registrations/${encodeURIComponent(id)}`, { headers: p.record.etag ? { 'if-match': p.record.etag } : {} });
        setNotice(`Deleted the registration record of ${id}.`);
      } else {
        await api(session, 'POST', `/homing/registrations/${encodeURIComponent(id)}/deprovision`, { body: {} });
        setNotice(`Deprovisioned ${id}: its record and its hub device identity were removed.`);
      }
      await load(undefined);
    } catch (e) {
      if (e instanceof ApiError && e.status === 412) setError(`The record of ${id} changed meanwhile: refresh and try again.`);
      else if (e instanceof ApiError && e.status === 404 && p.kind === 'deprovision') setError(`Deprovisioning is not available on this server, or ${id} has no record (${errorText(e)}).`);
      else setError(errorText(e));
    }
  }

  return (
    <section aria-labelledby="reg-title">
      <h1 id="reg-title">Registration records</h1>
      {!readable && <p className="hint">Registration records need a policy with the RegistrationStatusRead right.</p>}
      <form
        className="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void load(undefined);
        }}
      >
        <label>
          Enrollment group
          <input name="group" value={groupId} onChange={(e) => setGroupId(e.target.value)} placeholder="all" />
        </label>
        <label>
          Status
          <select name="status" value={status} onChange={(e) => setStatus(e.target.value)}>
            <option value="">Any</option>
            {['assigned', 'assigning', 'failed', 'disabled', 'unassigned'].map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Hub
          <input name="hub" value={hub} onChange={(e) => setHub(e.target.value)} placeholder="any" />
        </label>
        <button type="submit">Apply filters</button>
      </form>
      <Messages error={error} notice={notice} />
      <table className="list" aria-busy={loading}>
        <caption className="sr-only">Registration records</caption>
        <thead>
          <tr>
            <th scope="col">Registration id</th>
            <th scope="col">Device id</th>
            <th scope="col">Status</th>
            <th scope="col">Substatus</th>
            <th scope="col">Hub</th>
            <th scope="col">Last update</th>
            <th scope="col">Error</th>
            {writable && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {items.map((r) => (
            <tr key={r.registrationId} data-registration={r.registrationId}>
              <th scope="row">{r.registrationId}</th>
              <td>{r.deviceId ?? ''}</td>
              <td>
                <span className={`badge ${r.status ?? ''}`}>{r.status}</span>
              </td>
              <td>{r.substatus ?? ''}</td>
              <td>{r.assignedHub ?? ''}</td>
              <td>{r.lastUpdatedDateTimeUtc ? new Date(r.lastUpdatedDateTimeUtc).toLocaleString() : ''}</td>
              <td>{r.errorCode ? `${r.errorCode} ${r.errorMessage ?? ''}` : ''}</td>
              {writable && (
                <td className="actions">
                  <button type="button" onClick={() => setPending({ kind: 'delete', record: r })}>
                    Delete record
                  </button>
                  {session.features.deprovision && (
                    <button type="button" className="danger" onClick={() => setPending({ kind: 'deprovision', record: r })}>
                      Deprovision
                    </button>
                  )}
                </td>
              )}
            </tr>
          ))}
          {items.length === 0 && !loading && (
            <tr>
              <td colSpan={writable ? 8 : 7}>No registration records.</td>
            </tr>
          )}
        </tbody>
      </table>
      <div className="pager">
        <button type="button" disabled={next === undefined || loading} onClick={() => void load(next)}>
          Load more
        </button>
        <button type="button" disabled={loading} onClick={() => void load(undefined)}>
          Refresh
        </button>
      </div>
      {pending !== undefined && (
        <Dialog title={`${pending.kind === 'delete' ? 'Delete the registration record of' : 'Deprovision'} ${pending.record.registrationId}?`} onClose={() => setPending(undefined)}>
          <p>
            {pending.kind === 'delete'
              ? 'Only the record goes; the device identity stays on its hub. The device gets a new record when it registers again.'
              : 'The device identity is removed from its hub and the registration record is deleted.'}
          </p>
          <div className="row">
            <button type="button" onClick={() => setPending(undefined)}>
              Cancel
            </button>
            <button type="button" className="danger" onClick={() => void act(pending)}>
              {pending.kind === 'delete' ? 'Delete record' : 'Deprovision'}
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}
