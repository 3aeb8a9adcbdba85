import { useCallback, useEffect, useId, useState } from 'react';
import { Dialog } from '../components/Dialog.tsx';
import { ApiError, api, errorText, isBase64Key, randomKey } from '../api.ts';
import { href, navigate } from '../router.ts';
import { useSession } from '../session.tsx';
import { initialTwinError, reprovisionOf, reprovisionPolicy, type Attestation, type Enrollment, type LinkedHub, type ReprovisionChoice } from '../model.ts';
import { Messages } from '../components/Messages.tsx';

type Kind = 'groups' | 'individual';
type Policy = '' | 'hashed' | 'geoLatency' | 'static' | 'custom';

interface Form {
  id: string;
  deviceId: string;
  attestationType: 'symmetricKey' | 'x509' | 'tpm';
  autoKeys: boolean;
  primaryKey: string;
  secondaryKey: string;
  primaryPem: string;
  secondaryPem: string;
  provisioningStatus: 'enabled' | 'disabled';
  allocationPolicy: Policy;
  hubs: string[];
  webhookUrl: string;
  apiVersion: string;
  reprovision: ReprovisionChoice;
  initialTwin: string;
  iotEdge: boolean;
}

function formOf(e: Enrollment | undefined, kind: Kind): Form {
  const a = e?.attestation;
  return {
    id: (kind === 'groups' ? e?.enrollmentGroupId : e?.registrationId) ?? '',
    deviceId: e?.deviceId ?? '',
    attestationType: a?.type ?? 'symmetricKey',
    autoKeys: e === undefined,
    primaryKey: a?.symmetricKey?.primaryKey ?? '',
    secondaryKey: a?.symmetricKey?.secondaryKey ?? '',
    primaryPem: '',
    secondaryPem: '',
    provisioningStatus: e?.provisioningStatus ?? 'enabled',
    allocationPolicy: e?.allocationPolicy ?? '',
    hubs: e?.iotHubs ?? (e?.iotHubHostName ? [e.iotHubHostName] : []),
    webhookUrl: e?.customAllocationDefinition?.webhookUrl ?? '',
    apiVersion: e?.customAllocationDefinition?.apiVersion ?? '2021-10-01',
    reprovision: reprovisionOf(e?.reprovisionPolicy),
    initialTwin: e?.initialTwin === undefined ? '' : JSON.stringify(e.initialTwin, null, 2),
    iotEdge: e?.capabilities?.iotEdge ?? false,
  };
}

/** Problems that block saving (the server checks again). */
function validate(f: Form, creating: boolean): string[] {
  const out: string[] = [];
  if (!/^[A-Za-z0-9\-._:]{0,127}[A-Za-z0-9-]$/.test(f.id)) out.push('The id must be 1–128 characters of A–Z a–z 0–9 - . _ : ending in a letter, digit or "-".');
  if (f.attestationType === 'symmetricKey' && !f.autoKeys) {
    if (!isBase64Key(f.primaryKey)) out.push('The primary key must be base64 of 16–64 bytes.');
    if (!isBase64Key(f.secondaryKey)) out.push('The secondary key must be base64 of 16–64 bytes.');
  }
  if (f.attestationType === 'x509' && creating && f.primaryPem.trim().length === 0) out.push('Upload or paste the primary certificate (PEM).');
  if (f.allocationPolicy === 'static' && f.hubs.length !== 1) out.push('Static allocation needs exactly one hub.');
  if (f.allocationPolicy === 'custom') {
    if (!/^https?:\/\/\S+$/i.test(f.webhookUrl.trim())) out.push('The webhook URL must be an http(s) URL.');
    if (f.apiVersion.trim().length === 0) out.push('The webhook api-version is required.');
  }
  const twin = initialTwinError(f.initialTwin);
  if (twin) out.push(`Initial twin: ${twin}`);
  return out;
}

function bodyOf(f: Form, original: Enrollment | undefined, kind: Kind): Enrollment {
  const { registrationState: _state, ...rest } = original ?? ({} as Enrollment);
  const b: Enrollment = { ...rest };
  if (kind === 'groups') b.enrollmentGroupId = f.id;
  else {
    b.registrationId = f.id;
    if (f.deviceId.trim().length > 0) b.deviceId = f.deviceId.trim();
    else delete b.deviceId;
  }
  let att: Attestation;
  if (original?.attestation !== undefined && f.attestationType === original.attestation.type && f.attestationType !== 'symmetricKey') att = { ...original.attestation };
  else att = { type: f.attestationType };
  if (f.attestationType === 'symmetricKey') att.symmetricKey = f.autoKeys && original === undefined ? {} : { primaryKey: f.primaryKey.trim(), secondaryKey: f.secondaryKey.trim() };
  if (f.attestationType === 'x509' && f.primaryPem.trim().length > 0) {
    const certs = { primary: { certificate: f.primaryPem.trim() }, ...(f.secondaryPem.trim() ? { secondary: { certificate: f.secondaryPem.trim() } } : {}) };
    att.x509 = kind === 'groups' ? { signingCertificates: certs } : { clientCertificates: certs };
  }
  b.attestation = att;
  b.provisioningStatus = f.provisioningStatus;
  delete b.iotHubHostName;
  if (f.allocationPolicy === '') {
    delete b.allocationPolicy;
    delete b.customAllocationDefinition;
    if (f.hubs.length > 0) b.iotHubs = f.hubs;
    else delete b.iotHubs;
  } else {
    b.allocationPolicy = f.allocationPolicy;
    if (f.allocationPolicy === 'custom') b.customAllocationDefinition = { webhookUrl: f.webhookUrl.trim(), apiVersion: f.apiVersion.trim() };
    else delete b.customAllocationDefinition;
    if (f.hubs.length > 0) b.iotHubs = f.hubs;
    else delete b.iotHubs;
  }
  b.reprovisionPolicy = reprovisionPolicy(f.reprovision);
  if (f.initialTwin.trim().length > 0) b.initialTwin = JSON.parse(f.initialTwin) as Enrollment['initialTwin'];
  else delete b.initialTwin;
  b.capabilities = { ...(original?.capabilities ?? {}), iotEdge: f.iotEdge };
  return b;
}

export default function EnrollmentEditor({ kind, id }: { kind: Kind; id: string | undefined }): React.JSX.Element {
  const { session, can } = useSession();
  const writable = can('EnrollmentWrite');
  const creating = id === undefined;
  const base = kind === 'groups' ? '/enrollmentGroups' : '/enrollments';
  const [original, setOriginal] = useState<Enrollment | undefined>();
  const [form, setForm] = useState<Form>(() => formOf(undefined, kind));
  const [hubs, setHubs] = useState<LinkedHub[] | undefined>();
  const [showKeys, setShowKeys] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const [notice, setNotice] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [conflict, setConflict] = useState<Enrollment | undefined>();
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [loaded, setLoaded] = useState(creating);
  const twinId = useId();

  const load = useCallback(async () => {
    if (id === undefined) return;
    setError(undefined);
    try {
      const r = await api<Enrollment>(session, 'GET', `${base}/${encodeURIComponent(id)}`);
      setOriginal(r.body);
      setForm(formOf(r.body, kind));
      setLoaded(true);
    } catch (e) {
      setError(errorText(e));
    }
  }, [session, base, id, kind]);

  useEffect(() => {
    void load();
  }, [load]);

  useEffect(() => {
    if (!can('ServiceConfig')) return;
    api<LinkedHub[]>(session, 'GET', '/homing/linkedHubs')
      .then((r) => setHubs(r.body))
      .catch(() => setHubs(undefined));
  }, [session, can]);

  const set = <K extends keyof Form>(k: K, v: Form[K]): void => setForm((f) => ({ ...f, [k]: v }));
  const problems = validate(form, creating);
  const twinError = initialTwinError(form.initialTwin);

  async function save(ifMatch: string | undefined): Promise<void> {
    setBusy(true);
    setError(undefined);
    setNotice(undefined);
    try {
      const headers: Record<string, string> = {};
      if (ifMatch !== undefined) headers['if-match'] = ifMatch;
      const r = await api<Enrollment>(session, 'PUT', `${base}/${encodeURIComponent(form.id)}`, { body: bodyOf(form, original, kind), headers });
      setConflict(undefined);
      setOriginal(r.body);
      setForm(formOf(r.body, kind));
      setNotice('Saved.');
      if (creating) navigate(href('enrollments', kind, form.id));
    } catch (e) {
      if (e instanceof ApiError && e.status === 412 && !creating) {
        try {
          const theirs = await api<Enrollment>(session, 'GET', `${base}/${encodeURIComponent(form.id)}`);
          setConflict(theirs.body);
        } catch {
          setConflict({});
        }
      } else if (e instanceof ApiError && e.status === 409 && creating) setError(`An entry with the id "${form.id}" already exists.`);
      else setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  async function remove(): Promise<void> {
    setBusy(true);
    try {
      await api(session, 'DELETE', `${base}/${encodeURIComponent(form.id)}`, { headers: original?.etag ? { 'if-match': original.etag } : {} });
      navigate(href('enrollments', kind));
    } catch (e) {
      setConfirmDelete(false);
      setError(e instanceof ApiError && e.status === 412 ? 'Someone else changed this entry: reload it before deleting.' : errorText(e));
    } finally {
      setBusy(false);
    }
  }

  async function readPem(file: File | undefined, field: 'primaryPem' | 'secondaryPem'): Promise<void> {
    if (file === undefined) return;
    set(field, await file.text());
  }

  const title = creating ? (kind === 'groups' ? 'New enrollment group' : 'New individual enrollment') : `${kind === 'groups' ? 'Enrollment group' : 'Individual enrollment'} ${id}`;
  const ro = !writable;
  const hubChoice = form.allocationPolicy === 'static' ? 'radio' : 'checkbox';
  const a = original?.attestation;
  const certInfo = kind === 'groups' ? a?.x509?.signingCertificates : a?.x509?.clientCertificates;

  return (
    <section aria-labelledby="editor-title">
      <p>
        <a href={href('enrollments', kind)}>← {kind === 'groups' ? 'Enrollment groups' : 'Individual enrollments'}</a>
      </p>
      <h1 id="editor-title">{title}</h1>
      <Messages error={error} notice={notice} />
      {!loaded ? (
        error === undefined && <p role="status">Loading…</p>
      ) : (
        <form
          className="editor"
          onSubmit={(e) => {
            e.preventDefault();
            if (problems.length === 0 && writable) void save(creating ? undefined : original?.etag);
          }}
        >
          <fieldset disabled={ro || busy}>
            <legend>Identity</legend>
            <label>
              {kind === 'groups' ? 'Group id' : 'Registration id'}
              <input name="id" value={form.id} readOnly={!creating} onChange={(e) => set('id', e.target.value)} required />
            </label>
            {kind === 'individual' && (
              <label>
                Device id (optional, defaults to the registration id)
                <input name="deviceId" value={form.deviceId} onChange={(e) => set('deviceId', e.target.value)} />
              </label>
            )}
            <label>
              Provisioning status
              <select name="provisioningStatus" value={form.provisioningStatus} onChange={(e) => set('provisioningStatus', e.target.value as Form['provisioningStatus'])}>
                <option value="enabled">Enabled</option>
                <option value="disabled">Disabled</option>
              </select>
            </label>
            <label className="check">
              <input type="checkbox" name="iotEdge" checked={form.iotEdge} onChange={(e) => set('iotEdge', e.target.checked)} /> IoT Edge device
            </label>
          </fieldset>

          <fieldset disabled={ro || busy}>
            <legend>Attestation</legend>
            <label>
              Mechanism
              <select name="attestationType" value={form.attestationType} disabled={!creating} onChange={(e) => set('attestationType', e.target.value as Form['attestationType'])}>
                <option value="symmetricKey">Symmetric key</option>
                <option value="x509">X.509 certificate</option>
                {kind === 'individual' && form.attestationType === 'tpm' && <option value="tpm">TPM</option>}
              </select>
            </label>
            {form.attestationType === 'symmetricKey' && (
              <>
                {creating && (
                  <label className="check">
                    <input type="checkbox" name="autoKeys" checked={form.autoKeys} onChange={(e) => set('autoKeys', e.target.checked)} /> Generate keys automatically
                  </label>
                )}
                {!form.autoKeys && (
                  <>
                    <label>
                      Primary key
                      <input name="primaryKey" type={showKeys ? 'text' : 'password'} value={form.primaryKey} onChange={(e) => set('primaryKey', e.target.value)} spellCheck={false} autoComplete="off" />
                    </label>
                    <label>
                      Secondary key
                      <input name="secondaryKey" type={showKeys ? 'text' : 'password'} value={form.secondaryKey} onChange={(e) => set('secondaryKey', e.target.value)} spellCheck={false} autoComplete="off" />
                    </label>
                    {writable && (
                      <div className="row">
                        <button type="button" onClick={() => setForm((f) => ({ ...f, primaryKey: randomKey(), secondaryKey: randomKey() }))}>
                          Generate new keys
                        </button>
                      </div>
                    )}
                  </>
                )}
              </>
            )}
            {form.attestationType === 'x509' && (
              <>
                {certInfo?.primary?.info && (
                  <p className="hint">
                    Primary certificate: {certInfo.primary.info.subjectName} (SHA-256 {certInfo.primary.info.sha256Thumbprint})
                  </p>
                )}
                {a?.x509?.caReferences?.primary && <p className="hint">CA reference: {a.x509.caReferences.primary}</p>}
                <label>
                  {creating ? 'Primary certificate (PEM file)' : 'Replace the primary certificate (PEM file)'}
                  <input type="file" name="primaryPemFile" accept=".pem,.crt,.cer" onChange={(e) => void readPem(e.target.files?.[0], 'primaryPem')} />
                </label>
                <label>
                  Primary certificate (PEM)
                  <textarea name="primaryPem" rows={4} value={form.primaryPem} onChange={(e) => set('primaryPem', e.target.value)} spellCheck={false} placeholder="-----BEGIN CERTIFICATE-----" />
                </label>
                <label>
                  Secondary certificate (PEM file, optional)
                  <input type="file" name="secondaryPemFile" accept=".pem,.crt,.cer" onChange={(e) => void readPem(e.target.files?.[0], 'secondaryPem')} />
                </label>
              </>
            )}
            {form.attestationType === 'tpm' && <p className="hint">TPM endorsement key: {a?.tpm?.endorsementKey?.slice(0, 16)}…</p>}
          </fieldset>
          <label className="check">
            <input type="checkbox" checked={showKeys} onChange={(e) => setShowKeys(e.target.checked)} /> Show keys
          </label>

          <fieldset disabled={ro || busy}>
            <legend>Allocation</legend>
            <label>
              Allocation policy
              <select name="allocationPolicy" value={form.allocationPolicy} onChange={(e) => set('allocationPolicy', e.target.value as Policy)}>
                <option value="">Instance default</option>
                <option value="hashed">Evenly weighted distribution (hashed)</option>
                <option value="geoLatency">Lowest latency (geoLatency)</option>
                <option value="static">Static configuration</option>
                <option value="custom">Custom (webhook)</option>
              </select>
            </label>
            {form.allocationPolicy === 'custom' && (
              <>
                <label>
                  Webhook URL
                  <input name="webhookUrl" type="url" value={form.webhookUrl} onChange={(e) => set('webhookUrl', e.target.value)} />
                </label>
                <label>
                  Webhook api-version
                  <input name="apiVersion" value={form.apiVersion} onChange={(e) => set('apiVersion', e.target.value)} />
                </label>
              </>
            )}
            <fieldset className="hubs">
              <legend>{form.allocationPolicy === 'static' ? 'Hub (exactly one)' : 'Hubs this enrollment can be assigned to (none: all linked hubs)'}</legend>
              {hubs !== undefined ? (
                hubs.map((h) => (
                  <label key={h.name} className="check">
                    <input
                      type={hubChoice}
                      name="hub"
                      value={h.name}
                      checked={form.hubs.some((x) => x.toLowerCase() === h.name.toLowerCase())}
                      onChange={(e) => {
                        if (hubChoice === 'radio') set('hubs', [h.name]);
                        else set('hubs', e.target.checked ? [...form.hubs, h.name] : form.hubs.filter((x) => x.toLowerCase() !== h.name.toLowerCase()));
                      }}
                    />{' '}
                    {h.name} <span className="hint">({h.location}, weight {h.allocationWeight})</span>
                  </label>
                ))
              ) : (
                <label>
                  Hub host names, comma-separated
                  <input name="hubsText" value={form.hubs.join(', ')} onChange={(e) => set('hubs', e.target.value.split(',').map((s) => s.trim()).filter((s) => s.length > 0))} />
                </label>
              )}
            </fieldset>
            <label>
              Reprovision policy (when a device registers again)
              <select name="reprovision" value={form.reprovision} onChange={(e) => set('reprovision', e.target.value as ReprovisionChoice)}>
                <option value="migrate">Re-provision and migrate data</option>
                <option value="reset">Re-provision and reset to initial config</option>
                <option value="never">Never re-provision</option>
              </select>
            </label>
          </fieldset>

          <fieldset disabled={ro || busy}>
            <legend>Initial device twin</legend>
            <label htmlFor={twinId}>Initial twin (JSON: tags and properties.desired)</label>
            <textarea
              id={twinId}
              name="initialTwin"
              rows={8}
              className="code"
              value={form.initialTwin}
              onChange={(e) => set('initialTwin', e.target.value)}
              aria-invalid={twinError !== undefined}
              aria-describedby={twinError !== undefined ? `${twinId}-err` : undefined}
              spellCheck={false}
              placeholder={'{\n  "tags": {},\n  "properties": { "desired": {} }\n}'}
            />
            {twinError !== undefined && (
              <p id={`${twinId}-err`} className="error" role="alert">
                {twinError}
              </p>
            )}
          </fieldset>

          {original?.registrationState !== undefined && (
            <p className="hint">
              Registration: {original.registrationState.status} on {original.registrationState.assignedHub ?? '—'} (device {original.registrationState.deviceId ?? '—'})
            </p>
          )}
          {!creating && kind === 'groups' && (
            <p>
              <a href={`${href('registrations')}?group=${encodeURIComponent(form.id)}`}>Registration records of this group</a>
            </p>
          )}
          {writable && problems.length > 0 && (
            <ul className="problems" aria-label="Problems to fix before saving">
              {problems.map((p) => (
                <li key={p}>{p}</li>
              ))}
            </ul>
          )}
          {writable && (
            <div className="row">
              <button type="submit" className="primary" disabled={busy || problems.length > 0}>
                Save
              </button>
              {!creating && (
                <button type="button" className="danger" disabled={busy} onClick={() => setConfirmDelete(true)}>
                  Delete
                </button>
              )}
            </div>
          )}
          {!writable && <p className="hint">This policy can read enrollments but not change them.</p>}
        </form>
      )}

      {conflict !== undefined && (
        <Dialog title="Conflict: this entry was changed" onClose={() => setConflict(undefined)}>
          <p>
            Someone else saved this {kind === 'groups' ? 'enrollment group' : 'enrollment'} after you opened it
            {conflict.lastUpdatedDateTimeUtc ? ` (at ${new Date(conflict.lastUpdatedDateTimeUtc).toLocaleString()})` : ''}. Reload to see their version and lose your changes, or overwrite their changes with yours.
          </p>
          <div className="row">
            <button
              type="button"
              onClick={() => {
                setConflict(undefined);
                void load();
              }}
            >
              Reload their version
            </button>
            <button type="button" className="danger" onClick={() => void save(conflict.etag ?? '*')}>
              Overwrite with mine
            </button>
            <button type="button" onClick={() => setConflict(undefined)}>
              Cancel
            </button>
          </div>
        </Dialog>
      )}
      {confirmDelete && (
        <Dialog title={`Delete ${form.id}?`} onClose={() => setConfirmDelete(false)}>
          <p>{kind === 'groups' ? 'Devices can no longer register through this group; their registration records are kept.' : 'The enrollment and its registration record are deleted.'}</p>
          <div className="row">
            <button type="button" onClick={() => setConfirmDelete(false)}>
              Cancel
            </button>
            <button type="button" className="danger" onClick={() => void remove()}>
              Delete
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}
