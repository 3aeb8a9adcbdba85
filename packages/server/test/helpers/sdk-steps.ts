import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHomingProcess, runSdkScript, type HomingProcess, type ScriptLine } from './homing-process.ts';

/** A `homing start` process and the step results of an SDK script run against it (see sdkScriptSteps). */
export interface SdkSteps {
  /** The running `homing start` (available once the `before` hook ran). */
  readonly homing: HomingProcess;
  /** The result of a step; fails the test when the step did not run or did not succeed. */
  stepResult(name: string): ScriptLine;
}

export interface SdkStepsOptions {
  /** Add the server's stderr to the message of a failed step (default true). */
  serverLogOnFailure?: boolean;
}

/**
 * Call inside a `describe`: its `before` starts `homing start` in its own process and runs `script` (a .cjs script of
 * test/interop/sdk printing one JSON line per step, with the connection.json contents as argv[2] and the dev CA
 * trusted); its `after` stops the process (exit code 0) and removes its data.
 */
export function sdkScriptSteps(script: string, opts: SdkStepsOptions = {}): SdkSteps {
  let homing: HomingProcess | undefined;
  let lines: ScriptLine[] = [];
  let stderr = '';

  before(async () => {
    homing = await startHomingProcess([]);
    const r = await runSdkScript(script, [JSON.stringify(homing.connection)], homing.connection.caCertPath);
    lines = r.lines;
    stderr = r.stderr;
  });

  after(async () => {
    assert.equal(await homing?.stop(), 0);
    homing?.cleanup();
  });

  const running = (): HomingProcess => {
    assert.ok(homing, 'homing start did not start');
    return homing;
  };

  return {
    get homing() {
      return running();
    },
    stepResult(name: string): ScriptLine {
      const h = running();
      const l = lines.find((x) => x.step === name);
      assert.ok(l, `step "${name}" did not run. Steps: ${JSON.stringify(lines)}\nstderr: ${stderr}\nserver: ${h.stderr()}`);
      assert.equal(l.ok, true, `step "${name}" failed: ${l.error}${opts.serverLogOnFailure === false ? '' : `\nserver: ${h.stderr()}`}`);
      return l;
    },
  };
}
