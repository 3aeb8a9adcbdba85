import { useCallback, useEffect, useState } from 'react';
import { ApiError, api, errorText, streamEvents } from '../api.ts';
import { useSession } from '../session.tsx';
import { LineChart, RateChart, type MinuteBar, type Series } from '../components/charts.tsx';
import { Messages } from '../components/Messages.tsx';

interface Stats {
  time: string;
  hubs: { name: string; devices: number }[];
  statuses: Record<string, number>;
  perMinute: (MinuteBar & { calls: number })[];
  quota: { registrationsPerMinute: number | null };
  history: { t: string; hubs: Record<string, number> }[];
}

interface RegistrationEvent {
  type: string;
  registrationId: string;
  deviceId?: string;
  assignedHub?: string;
  substatus?: string;
  errorCode?: number;
  errorMessage?: string;
  time: string;
  operationId: string;
}

interface FleetJob {
  id: string;
  state: string;
  selection: Record<string, string>;
  progress: { total: number; done: number; pending: number; inFlight: number; moved: number; unchanged: number; failed: number };
  rate: { perMinute: number };
  etaSeconds: number | null;
  pausedReason?: string;
}

const POLL_MS = 3000;

function JobsPanel(): React.JSX.Element {
  const { session, can } = useSession();
  const writable = can('RegistrationStatusWrite');
  const [jobs, setJobs] = useState<FleetJob[] | undefined>();
  const [available, setAvailable] = useState(true);
  const [error, setError] = useState<string | undefined>();
  const [kind, setKind] = useState('enrollmentGroupId');
  const [value, setValue] = useState('');
  const [rate, setRate] = useState('');

  const load = useCallback(async () => {
    try {
      const r = await api<FleetJob[] | { jobs?: FleetJob[]; value?: FleetJob[] }>(session, 'GET', '/homing/fleet/jobs');
      const b = r.body;
      setJobs(Array.isArray(b) ? b : (b.jobs ?? b.value ?? []));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) setAvailable(false);
      else setError(errorText(e));
    }
  }, [session]);

  useEffect(() => {
    void load();
    const t = setInterval(() => void load(), POLL_MS);
    return () => clearInterval(t);
  }, [load]);

  async function steer(id: string, action: 'pause' | 'resume' | 'cancel'): Promise<void> {
    setError(undefined);
    try {
      await api(session, 'POST', `/homing/fleet/jobs/${encodeURIComponent(id)}/${action}`, { body: {} });
      await load();
    } catch (e) {
      setError(errorText(e));
    }
  }

  async function start(e: React.FormEvent): Promise<void> {
    e.preventDefault();
    setError(undefined);
    try {
      const body: Record<string, unknown> = { selection: { [kind]: value.trim() } };
      if (rate.trim() !== '') body.rate = Number(rate);
      await api(session, 'POST', '/homing/fleet/jobs', { body });
      setValue('');
      await load();
    } catch (err) {
      setError(errorText(err));
    }
  }

  if (!available) return <p className="hint">Phased reprovisioning jobs are not available on this server.</p>;
  return (
    <div>
      <Messages error={error} />
      {writable && (
        <form className="toolbar" onSubmit={(e) => void start(e)}>
          <label>
            Select devices by
            <select value={kind} onChange={(e) => setKind(e.target.value)}>
              <option value="enrollmentGroupId">Enrollment group</option>
              <option value="registrationId">Registration id</option>
              <option value="hub">Current hub</option>
              <option value="pattern">Registration id pattern</option>
            </select>
          </label>
          <label>
            Value
            <input value={value} onChange={(e) => setValue(e.target.value)} required />
          </label>
          <label>
            Devices per minute (optional)
            <input type="number" min={1} value={rate} onChange={(e) => setRate(e.target.value)} className="narrow" />
          </label>
          <button type="submit" className="primary">
            Start reprovisioning
          </button>
        </form>
      )}
      <table className="list">
        <caption className="sr-only">Reprovisioning jobs</caption>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Selection</th>
            <th scope="col">State</th>
            <th scope="col">Progress</th>
            <th scope="col">ETA</th>
            {writable && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {(jobs ?? []).map((j) => {
            const pct = j.progress.total > 0 ? (j.progress.done / j.progress.total) * 100 : 100;
            return (
              <tr key={j.id}>
                <th scope="row" className="mono">
                  {j.id.slice(0, 8)}
                </th>
                <td>{Object.entries(j.selection).map(([k, v]) => `${k}: ${v}`).join(', ')}</td>
                <td>
                  {j.state}
                  {j.pausedReason ? ` (${j.pausedReason})` : ''}
                </td>
                <td>
                  <progress max={100} value={pct} aria-label={`Job ${j.id} progress`} /> {j.progress.done}/{j.progress.total} ({j.progress.moved} moved, {j.progress.failed} failed)
                </td>
                <td>{j.etaSeconds === null ? '—' : `${j.etaSeconds} s`}</td>
                {writable && (
                  <td className="actions">
                    {j.state === 'running' && (
                      <button type="button" onClick={() => void steer(j.id, 'pause')}>
                        Pause
                      </button>
                    )}
                    {j.state === 'paused' && (
                      <button type="button" onClick={() => void steer(j.id, 'resume')}>
                        Resume
                      </button>
                    )}
                    {(j.state === 'running' || j.state === 'paused' || j.state === 'pending') && (
                      <button type="button" className="danger" onClick={() => void steer(j.id, 'cancel')}>
                        Cancel
                      </button>
                    )}
                  </td>
                )}
              </tr>
            );
          })}
          {jobs !== undefined && jobs.length === 0 && (
            <tr>
              <td colSpan={writable ? 6 : 5}>No jobs yet.</td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}

export default function Fleet(): React.JSX.Element {
  const { session, can } = useSession();
  const [stats, setStats] = useState<Stats | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [events, setEvents] = useState<RegistrationEvent[]>([]);
  const [live, setLive] = useState<'connecting' | 'live' | 'stopped'>('connecting');
  const readable = can('RegistrationStatusRead');

  useEffect(() => {
    if (!readable) return;
    let stop = false;
    const tick = async (): Promise<void> => {
      try {
        const r = await api<Stats>(session, 'GET', '/homing/stats');
        if (!stop) {
          setStats(r.body);
          setError(undefined);
        }
      } catch (e) {
        if (!stop) setError(errorText(e));
      }
    };
    void tick();
    const t = setInterval(() => void tick(), POLL_MS);
    return () => {
      stop = true;
      clearInterval(t);
    };
  }, [session, readable]);

  useEffect(() => {
    if (!readable) return;
    const ctl = new AbortController();
    let retry: ReturnType<typeof setTimeout> | undefined;
    const connect = (): void => {
      setLive('connecting');
      streamEvents(
        session,
        '/homing/events',
        (type, data) => {
          if (type !== 'registration') return;
          setLive('live');
          try {
            const ev = JSON.parse(data) as RegistrationEvent;
            setEvents((old) => (old.some((o) => o.operationId === ev.operationId && o.type === ev.type) ? old : [ev, ...old].slice(0, 200)));
          } catch {
            // A malformed event is skipped.
          }
        },
        ctl.signal,
      )
        .then(() => undefined)
        .catch(() => undefined)
        .finally(() => {
          if (!ctl.signal.aborted) {
            setLive('stopped');
            retry = setTimeout(connect, 3000);
          }
        });
      setLive('live');
    };
    connect();
    return () => {
      ctl.abort();
      if (retry) clearTimeout(retry);
    };
  }, [session, readable]);

  if (!readable) {
    return (
      <section>
        <h1>Fleet</h1>
        <p className="hint">The fleet view needs a policy with the RegistrationStatusRead right.</p>
      </section>
    );
  }

  const hubNames = stats ? [...new Set([...stats.hubs.map((h) => h.name), ...stats.history.flatMap((s) => Object.keys(s.hubs))])] : [];
  const series: Series[] = hubNames.map((name) => ({ name, points: (stats?.history ?? []).map((s) => ({ t: Date.parse(s.t), v: s.hubs[name] ?? 0 })) }));
  const bars = (stats?.perMinute ?? []).slice(-30);
  const throttled = bars.reduce((s, b) => s + b.throttled, 0);

  return (
    <section aria-labelledby="fleet-title">
      <h1 id="fleet-title">Fleet</h1>
      <Messages error={error} />
      <div className="cards">
        {stats?.hubs.map((h) => (
          <div className="card" key={h.name} data-testid={`hub-card-${h.name}`}>
            <div className="hint">{h.name}</div>
            <div className="big">{h.devices}</div>
            <div className="hint">devices</div>
          </div>
        ))}
        {stats &&
          Object.entries(stats.statuses).map(([s, n]) => (
            <div className="card" key={s}>
              <div className="hint">records {s}</div>
              <div className="big">{n}</div>
            </div>
          ))}
      </div>
      <div className="grid2">
        <div>
          <h2>Devices per hub</h2>
          <LineChart series={series} title="Assigned devices per hub over time" />
        </div>
        <div>
          <h2>Registrations per minute</h2>
          <RateChart bars={bars} quota={stats?.quota.registrationsPerMinute ?? null} title="Registrations per minute over the last 30 minutes, against the quota, with minutes that had 429 answers marked" />
          <p className="hint">{throttled} device calls throttled (429) in the last 30 minutes.</p>
        </div>
      </div>
      <h2>
        Live registration events <span className={`badge ${live}`}>{live}</span>
      </h2>
      <ol className="events" aria-live="polite" aria-label="Registration events, newest first">
        {events.map((e) => (
          <li key={`${e.operationId}-${e.type}`} data-event={e.type}>
            <time dateTime={e.time}>{new Date(e.time).toLocaleTimeString()}</time> <span className={`badge ${e.type}`}>{e.type}</span> {e.registrationId}
            {e.assignedHub ? ` → ${e.assignedHub}` : ''}
            {e.errorCode ? ` (${e.errorCode} ${e.errorMessage ?? ''})` : ''}
          </li>
        ))}
        {events.length === 0 && <li className="hint">No registration events in the last few minutes.</li>}
      </ol>
      <h2>Phased reprovisioning</h2>
      {session.features.fleetJobs ? <JobsPanel /> : <p className="hint">Phased reprovisioning jobs are not available on this server.</p>}
    </section>
  );
}
