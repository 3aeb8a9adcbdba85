import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { REPO_ROOT, runSdkScript, startHomingProcess, type HomingProcess } from '../../server/test/helpers/homing-process.ts';
import { deviceKey, ensurePortalBuilt, hubCall, launchBrowser, newContext, parseConnectionString, sas, screenshot, serviceCall, watchConsole } from './helpers.ts';

/**
 * The web portal in headless Debian chromium (playwright-core) against a real `homing start` child process on its
 * own loopback addresses: sign in, create a symmetric-key group with a custom initial twin and the migrate policy,
 * edit its hubs and the hub weights, an etag conflict shown to the user, a read-only policy without write controls,
 * and a device registered by the official SDK showing up in the registration records and the fleet view.
 * Every page is checked for console errors; screenshots go to artifacts/screenshots/.
 */
const GROUP = 'portal-group';
const DEVICE = 'portal-device-1';
const DEVICE2 = 'portal-device-2';

interface Enrollment {
  enrollmentGroupId: string;
  etag: string;
  iotHubs?: string[];
  allocationPolicy?: string;
  provisioningStatus?: string;
  reprovisionPolicy?: { updateHubAssignment: boolean; migrateDeviceData: boolean };
  initialTwin?: { tags?: Record<string, unknown>; properties?: { desired?: Record<string, unknown> } };
  attestation: { type: string; symmetricKey?: { primaryKey: string } };
}

describe('web portal in chromium', () => {
  let homing: HomingProcess;
  let browser: Browser;
  let ctx: BrowserContext;
  let page: Page;
  let consoleWatch: ReturnType<typeof watchConsole>;
  let owner: { keyName: string; key: string };
  let ownerSas: string;
  let portalUrl: string;
  let hub1: string;
  let hub2: string;

  before(async () => {
    ensurePortalBuilt();
    homing = await startHomingProcess([]);
    const cs = parseConnectionString(homing.connection.dps.serviceConnectionString);
    owner = { keyName: cs.SharedAccessKeyName ?? '', key: cs.SharedAccessKey ?? '' };
    ownerSas = sas(homing.connection.dps.deviceHost, owner.keyName, owner.key);
    portalUrl = String(homing.connection.portalUrl);
    hub1 = homing.connection.hubs[0]?.hostName ?? '';
    hub2 = homing.connection.hubs[1]?.hostName ?? '';
    browser = await launchBrowser();
    ctx = await newContext(browser);
    page = await ctx.newPage();
    consoleWatch = watchConsole(page);
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await homing?.stop();
    homing?.cleanup();
  });

  const noConsoleErrors = (): void => assert.deepEqual(consoleWatch.errors, [], 'no console errors');
  const fits1280 = async (p: Page): Promise<void> => {
    const width = Number(await p.evaluate('document.documentElement.scrollWidth'));
    assert.ok(width <= 1280, `the page fits 1280 px (scrollWidth ${width})`);
  };

  test('connection.json names the portal, and /portal/ serves the built app', async () => {
    assert.match(portalUrl, /^https:\/\/[\d.]+\/portal\/$/);
    const r = await serviceCall(homing.connection, '', 'GET', '/portal/');
    assert.equal(r.status, 200);
    assert.match(String(r.body), /<div id="root">/);
    assert.match(String(r.headers['content-security-policy']), /default-src 'self'/);
  });

  test('sign in with the policy key name and key (keyboard only)', async () => {
    await page.goto(portalUrl);
    await page.getByRole('heading', { name: 'Sign in to Homing' }).waitFor();
    await screenshot(page, '01-sign-in');
    const key = page.getByLabel('Key', { exact: true });
    assert.equal(await key.getAttribute('type'), 'password', 'the key is hidden by default');
    await page.getByLabel('Key name').focus();
    await page.keyboard.press('Control+A');
    await page.keyboard.type(owner.keyName);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate('document.activeElement && document.activeElement.name'), 'key', 'Tab moves to the key');
    await page.keyboard.type(owner.key);
    await page.keyboard.press('Enter');
    await page.getByTestId('signed-in-as').waitFor();
    assert.match(await page.getByTestId('signed-in-as').innerText(), /provisioningserviceowner/);
    await page.getByRole('tab', { name: 'Enrollment groups' }).waitFor();
    assert.equal(await page.evaluate("sessionStorage.getItem('homing.portal.session') !== null"), true, 'the session is kept in sessionStorage');
    assert.equal(await page.evaluate('localStorage.length'), 0, 'nothing in localStorage');
    await fits1280(page);
    noConsoleErrors();
  });

  test('a wrong key is refused with a clear message', async () => {
    const p = await ctx.newPage();
    const w = watchConsole(p);
    w.allow(/status of 401/);
    await p.goto(portalUrl);
    await p.evaluate('sessionStorage.clear()');
    await p.reload();
    await p.getByLabel('Key', { exact: true }).fill(Buffer.from('not the key, not the key, not it').toString('base64'));
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByRole('alert').filter({ hasText: 'Unauthorized' }).waitFor();
    assert.deepEqual(w.errors, []);
    await p.close();
  });

  test('create a symmetric-key group with a custom initial twin and the migrate policy', async () => {
    await page.goto(`${portalUrl}#/enrollments/groups`);
    await page.getByRole('link', { name: 'Add enrollment group' }).click();
    await page.getByRole('heading', { name: 'New enrollment group' }).waitFor();
    await page.getByLabel('Group id').fill(GROUP);
    assert.equal(await page.getByLabel('Mechanism').inputValue(), 'symmetricKey');
    await page.getByLabel('Allocation policy').selectOption('hashed');
    await page.locator(`input[name="hub"][value="${hub1}"]`).check();
    await page.locator(`input[name="hub"][value="${hub2}"]`).check();
    await page.getByLabel('Reprovision policy', { exact: false }).selectOption('reset');
    await page.getByLabel('Reprovision policy', { exact: false }).selectOption('migrate');
    const twin = page.getByLabel('Initial twin (JSON: tags and properties.desired)');
    // Invalid JSON is flagged at once and blocks saving.
    await twin.fill('{"tags": {"site": "lab"');
    await page.getByRole('alert').filter({ hasText: 'Not valid JSON' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Save' }).isDisabled(), true);
    await twin.fill('{"properties": {"reported": {"x": 1}}}');
    await page.getByRole('alert').filter({ hasText: 'properties.reported' }).waitFor();
    await twin.fill(JSON.stringify({ tags: { site: 'lab', floor: 3 }, properties: { desired: { telemetryInterval: 30 } } }, null, 2));
    await page.getByRole('button', { name: 'Save' }).waitFor({ state: 'visible' });
    assert.equal(await page.getByRole('button', { name: 'Save' }).isEnabled(), true);
    await screenshot(page, '03-new-group');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('heading', { name: `Enrollment group ${GROUP}` }).waitFor();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();

    const r = await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`);
    assert.equal(r.status, 200);
    const g = r.body as Enrollment;
    assert.equal(g.attestation.type, 'symmetricKey');
    assert.ok((g.attestation.symmetricKey?.primaryKey ?? '').length > 20, 'keys were generated');
    assert.equal(g.allocationPolicy, 'hashed');
    assert.deepEqual([...(g.iotHubs ?? [])].sort(), [hub1, hub2].sort());
    assert.deepEqual(g.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: true });
    assert.deepEqual(g.initialTwin?.tags, { site: 'lab', floor: 3 });
    assert.deepEqual(g.initialTwin?.properties?.desired, { telemetryInterval: 30 });

    // The list shows it; keys stay hidden until "Show keys".
    await page.goto(`${portalUrl}#/enrollments/groups`);
    await page.getByRole('link', { name: GROUP }).waitFor();
    await screenshot(page, '02-enrollment-groups');
    noConsoleErrors();
  });

  test('edit the hubs of the group, and the hub weights with a live allocation preview', async () => {
    await page.goto(`${portalUrl}#/enrollments/groups/${GROUP}`);
    await page.getByRole('heading', { name: `Enrollment group ${GROUP}` }).waitFor();
    await page.locator(`input[name="hub"][value="${hub1}"]`).uncheck();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    let g = (await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    assert.deepEqual(g.iotHubs, [hub2]);

    // Static allocation takes exactly one hub (radio buttons).
    await page.getByLabel('Allocation policy').selectOption('static');
    assert.equal(await page.locator('input[name="hub"][type="radio"]').count(), 2);
    await page.locator(`input[name="hub"][value="${hub2}"]`).check();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    g = (await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    assert.equal(g.allocationPolicy, 'static');
    assert.deepEqual(g.iotHubs, [hub2]);
    // Custom allocation asks for the webhook URL and api-version.
    await page.getByLabel('Allocation policy').selectOption('custom');
    await page.getByLabel('Webhook URL').waitFor();
    await page.getByLabel('Webhook api-version').waitFor();
    await page.getByLabel('Allocation policy').selectOption('hashed');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Linked hubs' }).click();
    await page.getByRole('heading', { name: 'Linked hubs' }).waitFor();
    await page.getByTestId(`share-${hub1}`).filter({ hasText: '50.0%' }).waitFor();
    await page.getByLabel(`Allocation weight of ${hub1}`).fill('3');
    await page.getByTestId(`share-${hub1}`).filter({ hasText: '75.0%' }).waitFor();
    await page.getByTestId(`share-${hub2}`).filter({ hasText: '25.0%' }).waitFor();
    // A hub that does not apply the allocation policy gets no share.
    await page.getByLabel(`Apply allocation policy to ${hub2}`).uncheck();
    await page.getByTestId(`share-${hub1}`).filter({ hasText: '100.0%' }).waitFor();
    await page.getByLabel(`Apply allocation policy to ${hub2}`).check();
    await page.locator(`tr[data-hub="${hub1}"]`).getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: `Saved ${hub1}.` }).waitFor();
    await screenshot(page, '05-linked-hubs');
    // Unlink asks first; Escape closes the dialog and gives the focus back.
    const unlinkButton = page.locator(`tr[data-hub="${hub2}"]`).getByRole('button', { name: 'Unlink' });
    await unlinkButton.click();
    const confirm = page.getByRole('alertdialog', { name: `Unlink ${hub2}?` });
    await confirm.waitFor();
    assert.equal(await page.evaluate('document.activeElement && document.activeElement.textContent'), 'Cancel');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await page.evaluate('document.activeElement && document.activeElement.textContent'), 'Unlink', 'Tab stays inside the dialog');
    await page.keyboard.press('Escape');
    await confirm.waitFor({ state: 'detached' });
    assert.equal(await unlinkButton.evaluate((el) => el === el.ownerDocument.activeElement), true);
    assert.equal((await serviceCall(homing.connection, ownerSas, 'GET', `/homing/linkedHubs/${hub2}`)).status, 200, 'still linked');
    const hub = (await serviceCall(homing.connection, ownerSas, 'GET', `/homing/linkedHubs/${hub1}`)).body as { allocationWeight: number };
    assert.equal(hub.allocationWeight, 3);
    await fits1280(page);
    noConsoleErrors();
  });

  test('an etag conflict is shown to the user, who can overwrite or reload', async () => {
    consoleWatch.allow(/status of 412/);
    await page.goto(`${portalUrl}#/enrollments/groups/${GROUP}`);
    await page.getByRole('heading', { name: `Enrollment group ${GROUP}` }).waitFor();
    await page.getByLabel('Group id').waitFor();
    // Someone else saves the group meanwhile.
    const theirs = (await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    const put = await serviceCall(homing.connection, ownerSas, 'PUT', `/enrollmentGroups/${GROUP}`, { ...theirs, initialTwin: { tags: { changedBy: 'someone else' } } }, { 'if-match': theirs.etag });
    assert.equal(put.status, 200);

    await page.getByLabel('Provisioning status').selectOption('disabled');
    await page.getByRole('button', { name: 'Save' }).click();
    const dialog = page.getByRole('alertdialog', { name: 'Conflict: this entry was changed' });
    await dialog.waitFor();
    await screenshot(page, '04-etag-conflict');
    // Nothing was overwritten silently.
    let g = (await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    assert.equal(g.provisioningStatus, 'enabled');
    assert.deepEqual(g.initialTwin?.tags, { changedBy: 'someone else' });
    // The dialog has the focus on its first button; Reload shows their version.
    assert.equal(await page.evaluate('document.activeElement && document.activeElement.textContent'), 'Reload their version');
    await dialog.getByRole('button', { name: 'Reload their version' }).click();
    await dialog.waitFor({ state: 'detached' });
    await page.getByLabel('Initial twin (JSON: tags and properties.desired)').filter({ hasText: 'someone else' }).waitFor();
    assert.equal(await page.getByLabel('Provisioning status').inputValue(), 'enabled');

    // Again, now overwriting.
    const again = (await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    assert.equal((await serviceCall(homing.connection, ownerSas, 'PUT', `/enrollmentGroups/${GROUP}`, { ...again, initialTwin: { tags: { changedBy: 'them again' } } }, { 'if-match': again.etag })).status, 200);
    await page.getByLabel('Initial twin (JSON: tags and properties.desired)').fill(JSON.stringify({ tags: { changedBy: 'me' } }));
    await page.getByRole('button', { name: 'Save' }).click();
    await dialog.waitFor();
    await dialog.getByRole('button', { name: 'Overwrite with mine' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    g = (await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    assert.deepEqual(g.initialTwin?.tags, { changedBy: 'me' });
    assert.deepEqual(g.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: true });
    noConsoleErrors();
  });

  test('an individual enrollment with keys generated in the browser, shown only on request', async () => {
    await page.goto(`${portalUrl}#/enrollments/individual`);
    await page.getByRole('tab', { name: 'Individual enrollments', selected: true }).waitFor();
    await page.getByRole('link', { name: 'Add individual enrollment' }).click();
    await page.getByLabel('Registration id', { exact: true }).fill('portal-individual-1');
    await page.getByLabel('Device id (optional, defaults to the registration id)').fill('portal-individual-device');
    await page.getByLabel('Generate keys automatically').uncheck();
    await page.getByRole('button', { name: 'Generate new keys' }).click();
    const primary = page.getByLabel('Primary key');
    assert.equal(await primary.getAttribute('type'), 'password');
    await page.getByLabel('Show keys').check();
    assert.equal(await primary.getAttribute('type'), 'text');
    const key = await primary.inputValue();
    assert.equal(Buffer.from(key, 'base64').length, 64);
    await page.getByLabel('IoT Edge device').check();
    await page.getByLabel('Allocation policy').selectOption('static');
    await page.locator(`input[name="hub"][value="${hub1}"]`).check();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('heading', { name: 'Individual enrollment portal-individual-1' }).waitFor();
    const e = (await serviceCall(homing.connection, ownerSas, 'GET', '/enrollments/portal-individual-1')).body as Enrollment & { deviceId: string; capabilities: { iotEdge: boolean } };
    assert.equal(e.attestation.symmetricKey?.primaryKey, key);
    assert.equal(e.deviceId, 'portal-individual-device');
    assert.equal(e.capabilities.iotEdge, true);
    assert.deepEqual(e.iotHubs, [hub1]);
    await page.goto(`${portalUrl}#/enrollments/individual`);
    await page.getByRole('link', { name: 'portal-individual-1' }).waitFor();
    noConsoleErrors();
  });

  test('a read-only policy sees no write controls, and the server refuses its writes', async () => {
    const keys = (await serviceCall(homing.connection, ownerSas, 'POST', '/homing/instance/listKeys')).body as { authorizationPolicies: { keyName: string; primaryKey: string }[] };
    const ro = keys.authorizationPolicies.find((p) => p.keyName === 'enrollmentread');
    assert.ok(ro, 'the enrollmentread policy exists');
    const roCtx = await newContext(browser);
    const p = await roCtx.newPage();
    const w = watchConsole(p);
    await p.goto(portalUrl);
    await p.getByLabel('Key name').fill('enrollmentread');
    await p.getByLabel('Key', { exact: true }).fill(ro.primaryKey);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByTestId('signed-in-as').filter({ hasText: 'enrollmentread' }).waitFor();
    await p.getByRole('link', { name: GROUP }).waitFor();
    assert.equal(await p.getByRole('link', { name: 'Add enrollment group' }).count(), 0);
    await p.getByRole('link', { name: GROUP }).click();
    await p.getByRole('heading', { name: `Enrollment group ${GROUP}` }).waitFor();
    await p.getByText('This policy can read enrollments but not change them.').waitFor();
    assert.equal(await p.getByRole('button', { name: 'Save' }).count(), 0);
    assert.equal(await p.getByRole('button', { name: 'Delete' }).count(), 0);
    assert.equal(await p.getByRole('button', { name: 'Generate new keys' }).count(), 0);
    assert.equal(await p.getByLabel('Provisioning status').isDisabled(), true);
    assert.equal(await p.getByLabel('Initial twin (JSON: tags and properties.desired)').isDisabled(), true);
    await screenshot(p, '08-read-only-group');
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Linked hubs' }).click();
    await p.getByText('Linked hubs need a policy with the ServiceConfig right.').waitFor();
    assert.equal(await p.getByRole('button', { name: 'Link hub' }).count(), 0);
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Registration records' }).click();
    await p.getByRole('heading', { name: 'Registration records' }).waitFor();
    // enrollmentread cannot read records: the page says so instead of calling the API.
    await p.getByText('Registration records need a policy with the RegistrationStatusRead right.').waitFor();
    assert.equal(await p.getByRole('button', { name: 'Deprovision' }).count(), 0);
    assert.deepEqual(w.errors, []);
    await roCtx.close();

    const roSas = sas(homing.connection.dps.deviceHost, 'enrollmentread', ro.primaryKey);
    const g = (await serviceCall(homing.connection, roSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    const refused = await serviceCall(homing.connection, roSas, 'PUT', `/enrollmentGroups/${GROUP}`, { ...g, provisioningStatus: 'disabled' }, { 'if-match': g.etag });
    assert.equal(refused.status, 401);
  });

  test('a device registered by the official SDK shows in the registration records and the fleet view', async () => {
    const g = (await serviceCall(homing.connection, ownerSas, 'GET', `/enrollmentGroups/${GROUP}`)).body as Enrollment;
    const key = deviceKey(g.attestation.symmetricKey?.primaryKey ?? '', DEVICE);
    const script = join(REPO_ROOT, 'packages/portal/test/sdk/register-device.cjs');
    const run = await runSdkScript(script, [homing.connection.dps.deviceHost, homing.connection.dps.idScope, DEVICE, key], homing.connection.caCertPath);
    const line = run.lines.find((l) => l.step === 'register');
    assert.ok(line?.ok, `SDK registration: ${JSON.stringify(run.lines)} ${run.stderr}`);
    const assignedHub = String((line.result as { assignedHub: string }).assignedHub);
    assert.ok([hub1, hub2].includes(assignedHub));

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Registration records' }).click();
    await page.getByRole('heading', { name: 'Registration records' }).waitFor();
    const row = page.locator(`tr[data-registration="${DEVICE}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /assigned/);
    assert.match(await row.innerText(), new RegExp(assignedHub.replace(/\./g, '\\.')));
    assert.equal(await row.getByRole('button', { name: 'Delete record' }).count(), 1);
    await screenshot(page, '06-registration-records');
    // Per group, through the DPS query API.
    await page.goto(`${portalUrl}#/registrations?group=${GROUP}`);
    await page.locator(`tr[data-registration="${DEVICE}"]`).waitFor();
    // Filtered by status.
    await page.getByLabel('Group', { exact: false }).fill('');
    await page.getByLabel('Status').selectOption('failed');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.getByText('No registration records.').waitFor();

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Fleet' }).click();
    await page.getByRole('heading', { name: 'Fleet' }).waitFor();
    await page.getByTestId(`hub-card-${assignedHub}`).locator('.big').filter({ hasText: /^1$/ }).waitFor();
    await page.locator(`.legend li[data-series="${assignedHub}"]`).filter({ hasText: `${assignedHub}: 1` }).waitFor();
    await page.locator('li[data-event="assigned"]').filter({ hasText: DEVICE }).waitFor();
    await page.getByRole('img', { name: 'Assigned devices per hub over time' }).waitFor();
    await screenshot(page, '07-fleet');
    await fits1280(page);

    // The phased-reprovisioning panel is there for a policy that may run jobs.
    await page.getByRole('button', { name: 'Start reprovisioning' }).waitFor();

    // A second device: delete its record from the portal; deprovision the first one completely.
    const second = await runSdkScript(script, [homing.connection.dps.deviceHost, homing.connection.dps.idScope, DEVICE2, deviceKey(g.attestation.symmetricKey?.primaryKey ?? '', DEVICE2)], homing.connection.caCertPath);
    assert.ok(second.lines.find((l) => l.step === 'register')?.ok, JSON.stringify(second.lines));
    await page.goto(`${portalUrl}#/registrations`);
    await page.locator(`tr[data-registration="${DEVICE2}"]`).getByRole('button', { name: 'Delete record' }).click();
    await page.getByRole('alertdialog').getByRole('button', { name: 'Delete record' }).click();
    await page.getByRole('status').filter({ hasText: `Deleted the registration record of ${DEVICE2}.` }).waitFor();
    assert.equal((await serviceCall(homing.connection, ownerSas, 'GET', `/registrations/${DEVICE2}`)).status, 404);

    await page.locator(`tr[data-registration="${DEVICE}"]`).getByRole('button', { name: 'Deprovision' }).click();
    await page.getByRole('alertdialog').getByRole('button', { name: 'Deprovision' }).click();
    await page.getByRole('status').filter({ hasText: `Deprovisioned ${DEVICE}` }).waitFor();
    assert.equal((await serviceCall(homing.connection, ownerSas, 'GET', `/registrations/${DEVICE}`)).status, 404);
    const hubConn = homing.connection.hubs.find((h) => h.hostName === assignedHub);
    assert.ok(hubConn);
    const hcs = parseConnectionString(hubConn.connectionString);
    const hubDevice = await hubCall(hubConn.hostName, homing.connection.caCertPath, sas(hubConn.hostName, hcs.SharedAccessKeyName ?? '', hcs.SharedAccessKey ?? ''), `/devices/${DEVICE}?api-version=2021-04-12`);
    assert.equal(hubDevice, 404, 'the device identity is gone from its hub');
    noConsoleErrors();
  });
});
