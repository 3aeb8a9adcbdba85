import { useCallback, useEffect, useState } from 'react';
import { Dialog } from '../components/Dialog.tsx';
import { api, errorText } from '../api.ts';
import { useSession } from '../session.tsx';
import { allocationShares, type LinkedHub } from '../model.ts';
import { Messages } from '../components/Messages.tsx';

interface StatsHub {
  name: string;
  devices: number;
}

interface Draft {
  allocationWeight: string;
  applyAllocationPolicy: boolean;
  location: string;
}

export default function Hubs(): React.JSX.Element {
  const { session, can } = useSession();
  const writable = can('ServiceConfig');
  const [hubs, setHubs] = useState<LinkedHub[]>([]);
  const [drafts, setDrafts] = useState<Record<string, Draft>>({});
  const [devices, setDevices] = useState<Record<string, number> | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [notice, setNotice] = useState<string | undefined>();
  const [link, setLink] = useState({ name: '', connectionString: '', location: 'local', allocationWeight: '1', applyAllocationPolicy: true });
  const [unlinking, setUnlinking] = useState<string | undefined>();
  const [showKeys, setShowKeys] = useState(false);

  const load = useCallback(async () => {
    setError(undefined);
    if (!can('ServiceConfig')) return;
    try {
      const r = await api<LinkedHub[]>(session, 'GET', '/homing/linkedHubs');
      setHubs(r.body);
      setDrafts(Object.fromEntries(r.body.map((h) => [h.name, { allocationWeight: String(h.allocationWeight), applyAllocationPolicy: h.applyAllocationPolicy, location: h.location }])));
    } catch (e) {
      setError(errorText(e));
    }
    if (can('RegistrationStatusRead')) {
      try {
        const s = await api<{ hubs: StatsHub[] }>(session, 'GET', '/homing/stats');
        setDevices(Object.fromEntries(s.body.hubs.map((h) => [h.name.toLowerCase(), h.devices])));
      } catch {
        setDevices(undefined);
      }
    }
  }, [session, can]);

  useEffect(() => {
    void load();
  }, [load]);

  const preview = hubs.map((h) => {
    const d = drafts[h.name];
    const w = Number(d?.allocationWeight ?? h.allocationWeight);
    return { name: h.name, allocationWeight: Number.isInteger(w) && w >= 1 && w <= 1000 ? w : 0, applyAllocationPolicy: d?.applyAllocationPolicy ?? h.applyAllocationPolicy };
  });
  const shares = allocationShares(preview);

  async function saveHub(h: LinkedHub): Promise<void> {
    const d = drafts[h.name];
    if (d === undefined) return;
    setError(undefined);
    setNotice(undefined);
    try {
      await api(session, 'PATCH', `/homing/linkedHubs/${encodeURIComponent(h.name)}`, { body: { allocationWeight: Number(d.allocationWeight), applyAllocationPolicy: d.applyAllocationPolicy, location: d.location } });
      setNotice(`Saved ${h.name}.`);
      await load();
    } catch (e) {
      setError(errorText(e));
    }
  }

  async function linkHub(e: React.FormEvent): Promise<void> {
    e.preventDefault();
    setError(undefined);
    setNotice(undefined);
    try {
      await api(session, 'PUT', `/homing/linkedHubs/${encodeURIComponent(link.name.trim())}`, {
        body: { connectionString: link.connectionString.trim(), location: link.location.trim() || 'local', allocationWeight: Number(link.allocationWeight), applyAllocationPolicy: link.applyAllocationPolicy },
      });
      setNotice(`Linked ${link.name.trim()}.`);
      setLink({ name: '', connectionString: '', location: 'local', allocationWeight: '1', applyAllocationPolicy: true });
      await load();
    } catch (err) {
      setError(errorText(err));
    }
  }

  async function unlink(name: string): Promise<void> {
    setUnlinking(undefined);
    try {
      await api(session, 'DELETE', `/homing/linkedHubs/${encodeURIComponent(name)}`);
      setNotice(`Unlinked ${name}.`);
      await load();
    } catch (e) {
      setError(errorText(e));
    }
  }

  const setDraft = (name: string, patch: Partial<Draft>): void => setDrafts((all) => ({ ...all, [name]: { ...(all[name] ?? { allocationWeight: '1', applyAllocationPolicy: true, location: 'local' }), ...patch } }));

  return (
    <section aria-labelledby="hubs-title">
      <h1 id="hubs-title">Linked hubs</h1>
      {!can('ServiceConfig') && <p className="hint">Linked hubs need a policy with the ServiceConfig right.</p>}
      <Messages error={error} notice={notice} />
      <table className="list">
        <caption className="sr-only">Linked IoT hubs</caption>
        <thead>
          <tr>
            <th scope="col">Hub</th>
            <th scope="col">Location</th>
            <th scope="col">Weight</th>
            <th scope="col">Apply allocation policy</th>
            <th scope="col">Devices</th>
            <th scope="col">Share of new devices</th>
            {writable && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {hubs.map((h) => {
            const d = drafts[h.name];
            const share = shares.get(h.name) ?? 0;
            return (
              <tr key={h.name} data-hub={h.name}>
                <th scope="row">
                  {h.name}
                  {showKeys && <div className="hint mono">{h.connectionString}</div>}
                </th>
                <td>
                  {writable ? (
                    <input aria-label={`Location of ${h.name}`} value={d?.location ?? h.location} onChange={(e) => setDraft(h.name, { location: e.target.value })} size={10} />
                  ) : (
                    h.location
                  )}
                </td>
                <td>
                  {writable ? (
                    <input
                      aria-label={`Allocation weight of ${h.name}`}
                      type="number"
                      min={1}
                      max={1000}
                      value={d?.allocationWeight ?? String(h.allocationWeight)}
                      onChange={(e) => setDraft(h.name, { allocationWeight: e.target.value })}
                      className="narrow"
                    />
                  ) : (
                    h.allocationWeight
                  )}
                </td>
                <td>
                  <input
                    type="checkbox"
                    aria-label={`Apply allocation policy to ${h.name}`}
                    checked={d?.applyAllocationPolicy ?? h.applyAllocationPolicy}
                    disabled={!writable}
                    onChange={(e) => setDraft(h.name, { applyAllocationPolicy: e.target.checked })}
                  />
                </td>
                <td data-testid={`devices-${h.name}`}>{devices?.[h.name.toLowerCase()] ?? '—'}</td>
                <td>
                  <div className="share" aria-label={`${(share * 100).toFixed(1)} percent`}>
                    <span style={{ width: `${share * 100}%` }} />
                  </div>
                  <span data-testid={`share-${h.name}`}>{(share * 100).toFixed(1)}%</span>
                </td>
                {writable && (
                  <td className="actions">
                    <button type="button" onClick={() => void saveHub(h)}>
                      Save
                    </button>
                    <button type="button" className="danger" onClick={() => setUnlinking(h.name)}>
                      Unlink
                    </button>
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
      <p className="hint">
        Allocation preview: with these weights, hashed allocation sends each new device to a hub with probability weight ÷ (sum of the weights of the hubs
        that apply the allocation policy). Enrollments that list hubs choose among those only.
      </p>
      <label className="check">
        <input type="checkbox" checked={showKeys} onChange={(e) => setShowKeys(e.target.checked)} /> Show connection strings (keys are masked by the server)
      </label>
      {writable && (
        <form className="editor" onSubmit={(e) => void linkHub(e)} aria-labelledby="link-title">
          <h2 id="link-title">Link a hub</h2>
          <label>
            Hub host name
            <input name="linkName" value={link.name} onChange={(e) => setLink({ ...link, name: e.target.value })} required />
          </label>
          <label>
            Connection string (a policy with RegistryWrite and ServiceConnect)
            <input name="linkConnectionString" type={showKeys ? 'text' : 'password'} value={link.connectionString} onChange={(e) => setLink({ ...link, connectionString: e.target.value })} required autoComplete="off" />
          </label>
          <label>
            Location
            <input name="linkLocation" value={link.location} onChange={(e) => setLink({ ...link, location: e.target.value })} />
          </label>
          <label>
            Allocation weight
            <input name="linkWeight" type="number" min={1} max={1000} value={link.allocationWeight} onChange={(e) => setLink({ ...link, allocationWeight: e.target.value })} />
          </label>
          <label className="check">
            <input type="checkbox" checked={link.applyAllocationPolicy} onChange={(e) => setLink({ ...link, applyAllocationPolicy: e.target.checked })} /> Apply allocation policy
          </label>
          <button type="submit" className="primary">
            Link hub
          </button>
        </form>
      )}
      {unlinking !== undefined && (
        <Dialog title={`Unlink ${unlinking}?`} onClose={() => setUnlinking(undefined)}>
          <p>Enrollments that name this hub keep naming it; their devices fail to provision until they are edited.</p>
          <div className="row">
            <button type="button" onClick={() => setUnlinking(undefined)}>
              Cancel
            </button>
            <button type="button" className="danger" onClick={() => void unlink(unlinking)}>
              Unlink
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}
