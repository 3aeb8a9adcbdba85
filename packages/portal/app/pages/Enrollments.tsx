import { useCallback, useEffect, useState } from 'react';
import { api, errorText } from '../api.ts';
import { href, navigate } from '../router.ts';
import { useSession } from '../session.tsx';
import type { Enrollment } from '../model.ts';
import { reprovisionOf } from '../model.ts';
import { Messages } from '../components/Messages.tsx';

type Kind = 'groups' | 'individual';

export default function Enrollments({ kind }: { kind: Kind }): React.JSX.Element {
  const { session, can } = useSession();
  const [items, setItems] = useState<Enrollment[]>([]);
  const [tokens, setTokens] = useState<(string | undefined)[]>([undefined]);
  const [next, setNext] = useState<string | undefined>();
  const [pageSize, setPageSize] = useState(25);
  const [search, setSearch] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [loading, setLoading] = useState(false);
  const base = kind === 'groups' ? '/enrollmentGroups' : '/enrollments';
  const page = tokens.length - 1;

  const load = useCallback(
    async (token: string | undefined) => {
      setLoading(true);
      setError(undefined);
      try {
        const headers: Record<string, string> = { 'x-ms-max-item-count': String(pageSize) };
        if (token !== undefined) headers['x-ms-continuation'] = token;
        const r = await api<Enrollment[]>(session, 'POST', `${base}/query`, { body: { query: '*' }, headers });
        setItems(r.body);
        setNext(r.headers.get('x-ms-continuation') ?? undefined);
      } catch (e) {
        setError(errorText(e));
      } finally {
        setLoading(false);
      }
    },
    [session, base, pageSize],
  );

  useEffect(() => {
    setTokens([undefined]);
    void load(undefined);
  }, [load]);

  const idOf = (e: Enrollment): string => (kind === 'groups' ? (e.enrollmentGroupId ?? '') : (e.registrationId ?? ''));
  const shown = items.filter((e) => idOf(e).toLowerCase().includes(search.trim().toLowerCase()));

  return (
    <section aria-labelledby="enr-title">
      <h1 id="enr-title">Enrollments</h1>
      <div role="tablist" aria-label="Enrollment kind" className="tabs">
        <a role="tab" aria-selected={kind === 'groups'} href={href('enrollments', 'groups')}>
          Enrollment groups
        </a>
        <a role="tab" aria-selected={kind === 'individual'} href={href('enrollments', 'individual')}>
          Individual enrollments
        </a>
      </div>
      <div className="toolbar">
        <form
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            const id = search.trim();
            if (id.length > 0 && shown.length === 0) navigate(href('enrollments', kind, id));
          }}
        >
          <label>
            Search by id
            <input type="search" name="search" value={search} onChange={(e) => setSearch(e.target.value)} placeholder="id (Enter opens an exact id)" />
          </label>
        </form>
        <label>
          Page size
          <select value={pageSize} onChange={(e) => setPageSize(Number(e.target.value))}>
            {[10, 25, 50, 100].map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={() => void load(tokens[tokens.length - 1])}>
          Refresh
        </button>
        {can('EnrollmentWrite') && (
          <a className="button primary" href={href('enrollments', kind, 'new')}>
            {kind === 'groups' ? 'Add enrollment group' : 'Add individual enrollment'}
          </a>
        )}
      </div>
      <Messages error={error} />
      <table className="list" aria-busy={loading}>
        <caption className="sr-only">{kind === 'groups' ? 'Enrollment groups' : 'Individual enrollments'}</caption>
        <thead>
          <tr>
            <th scope="col">{kind === 'groups' ? 'Group id' : 'Registration id'}</th>
            <th scope="col">Attestation</th>
            <th scope="col">Status</th>
            <th scope="col">Allocation</th>
            <th scope="col">Hubs</th>
            <th scope="col">Reprovision</th>
            <th scope="col">Last updated</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((e) => (
            <tr key={idOf(e)}>
              <td>
                <a href={href('enrollments', kind, idOf(e))}>{idOf(e)}</a>
              </td>
              <td>{e.attestation?.type ?? ''}</td>
              <td>{e.provisioningStatus ?? 'enabled'}</td>
              <td>{e.allocationPolicy ?? 'instance default'}</td>
              <td>{(e.iotHubs ?? []).join(', ')}</td>
              <td>{reprovisionOf(e.reprovisionPolicy)}</td>
              <td>{e.lastUpdatedDateTimeUtc ? new Date(e.lastUpdatedDateTimeUtc).toLocaleString() : ''}</td>
            </tr>
          ))}
          {shown.length === 0 && !loading && (
            <tr>
              <td colSpan={7}>{items.length === 0 ? 'No entries yet.' : 'No entry on this page matches.'}</td>
            </tr>
          )}
        </tbody>
      </table>
      <nav className="pager" aria-label="Pages">
        <button
          type="button"
          disabled={page === 0 || loading}
          onClick={() => {
            const t = tokens.slice(0, -1);
            setTokens(t);
            void load(t[t.length - 1]);
          }}
        >
          Previous page
        </button>
        <span>Page {page + 1}</span>
        <button
          type="button"
          disabled={next === undefined || loading}
          onClick={() => {
            setTokens([...tokens, next]);
            void load(next);
          }}
        >
          Next page
        </button>
      </nav>
    </section>
  );
}
